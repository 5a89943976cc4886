"""Addresses: gunicorn's binds, what a host name resolves to, and who serves whom."""

from __future__ import annotations

import socket

from doctor.facts.nginx import split_host_port


def tcp_and_unix_binds(
    settings,
) -> list[tuple[str, str | None, int | None, str | None]]:
    """Return (text, host, port, path) for each bind; fd:// binds are skipped."""
    binds = []
    for bind in settings.get("bind") or []:
        if bind.startswith("unix:"):
            binds.append((bind, None, None, bind[len("unix:") :]))
        elif not bind.startswith("fd://"):
            host, port = split_host_port(bind, 8000)
            binds.append((bind, host, port, None))
    return binds


def hosts_file_addresses(ctx, host: str) -> set[str]:
    """Return the addresses the root's /etc/hosts gives ``host``."""
    try:
        text = ctx.fs.host("/etc/hosts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    found = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) > 1 and host in words[1:]:
            found.add(words[0])
    return found


def resolve_loopback_name(ctx, host: str) -> set[str]:
    """Return the addresses a host name resolves to, for loopback names only."""
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        if not ctx.fs.is_live:
            return hosts_file_addresses(ctx, host) or {"127.0.0.1", "::1"}
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return {host}
        return {item[4][0] for item in infos}
    return {host}


def bind_covers(bind, address: str, port: int | None) -> bool:
    """Tell whether a TCP bind accepts connections to ``address:port``."""
    _, host, bind_port, path = bind
    if path is not None or bind_port != port:
        return False
    if host in ("::", "[::]"):
        # Linux accepts IPv4 too on a [::] socket unless net.ipv6.bindv6only=1.
        return True
    if host == "0.0.0.0":
        return ":" not in address
    return host == address


def bind_serves(bind, target, ctx) -> bool:
    if target.kind == "unix":
        path = bind[3]
        return (
            path is not None
            and ctx.fs.resolve(path)[0] == ctx.fs.resolve(target.path)[0]
        )
    return any(
        bind_covers(bind, a, target.port)
        for a in resolve_loopback_name(ctx, target.host)
    )
