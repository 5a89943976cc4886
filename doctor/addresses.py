"""Addresses: gunicorn's binds, what a host name resolves to, and who serves whom."""

from __future__ import annotations

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


def resolve_loopback_name(ctx, host: str) -> set[str]:
    """Return every address nginx gets for ``host``; an IP literal is itself.

    Names are resolved only from /etc/hosts (under the root), never by DNS.
    A name the hosts file does not list is returned unchanged.
    """
    from doctor.facts.binds import is_ip_literal, resolve_name

    if is_ip_literal(host):
        return {host}
    resolution = resolve_name(ctx, host)
    return set(resolution.nginx) or {host}


def gunicorn_address(ctx, host: str) -> str:
    """Return the address gunicorn binds for ``host``: an IPv4 for a name."""
    from doctor.facts.binds import is_ip_literal, resolve_name

    if is_ip_literal(host) or host in ("", "0.0.0.0", "::", "[::]"):
        return host
    return resolve_name(ctx, host).gunicorn or host


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
    text, host, port, path = bind
    resolved = (text, gunicorn_address(ctx, host), port, path)
    return any(
        bind_covers(resolved, a, target.port)
        for a in resolve_loopback_name(ctx, target.host)
    )
