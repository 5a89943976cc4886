"""One HTTP request to each address gunicorn binds, the way nginx would send it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from doctor.context import Context, FactUnavailable, fact

DEFAULT_PROXY_READ_TIMEOUT = 60.0
CONNECT_TIMEOUT = 2.0


@dataclass
class ProbeRun:
    """A probe's outcome together with what it was compared against."""

    bind: str
    outcome: object
    host_header: str | None
    slow_after: float | None
    through_nginx: bool = False


def nginx_seconds(text: str | None) -> float | None:
    """Convert an nginx time such as ``60s``, ``2m`` or ``500ms`` to seconds."""
    if not text:
        return None
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    parts = re.findall(r"(\d+)(ms|s|m|h|d)?", text)
    if not parts:
        return None
    for number, unit in parts:
        total += int(number) * units[unit or "s"]
    return total


def matching_targets(ctx: Context, bind_address) -> list:
    """Return nginx's proxy targets that reach ``bind_address``, when nginx is known."""
    try:
        config = ctx.fact("nginx")
    except FactUnavailable:
        return []
    found = []
    for target in config.proxy_targets:
        if bind_address.kind == "unix" and target.kind == "unix":
            if target.path == bind_address.path:
                found.append(target)
        elif bind_address.kind == "tcp" and target.kind == "tcp":
            same_host = target.host == bind_address.host or bind_address.host in (
                "0.0.0.0",
                "::",
            )
            if target.port == bind_address.port and same_host:
                found.append(target)
    return found


@fact("upstream_probes")
def upstream_probes(ctx: Context) -> list[ProbeRun]:
    """Probe every bind of the deployment that is on this host."""
    if ctx.static:
        raise FactUnavailable("static mode sends no request")
    if not ctx.fs.is_live:
        raise FactUnavailable(
            f"the target is the tree under --root {ctx.fs.root}; nothing of it runs here"
        )
    from doctor.upstream import parse_bind, parse_size, probe

    settings = ctx.fact("settings")
    runs = []
    gunicorn_timeout = settings.get("timeout")
    for bind in settings.get("bind") or []:
        address = parse_bind(bind)
        if address is None:
            continue
        if address.kind == "tcp" and address.host in ("0.0.0.0", ""):
            address = type(address)("tcp", "127.0.0.1", address.port, None)
        elif address.kind == "tcp" and address.host in ("::", "[::]"):
            address = type(address)("tcp", "::1", address.port, None)
        targets = matching_targets(ctx, address)
        host_header = None
        buffer_size = None
        read_timeout = DEFAULT_PROXY_READ_TIMEOUT
        if targets:
            target = targets[0]
            if target.server_names and target.server_names[0] not in ("_", ""):
                host_header = target.server_names[0]
            size = target.settings.get("proxy_buffer_size")
            buffer_size = parse_size(size.args[0]) if size else None
            read = target.settings.get("proxy_read_timeout")
            read_timeout = nginx_seconds(read.args[0] if read else None) or read_timeout
        if buffer_size is None and targets:
            buffer_size = 4096
        limits = [
            t
            for t in (gunicorn_timeout, read_timeout)
            if isinstance(t, int | float) and t > 0
        ]
        slow_after = float(min(limits)) if limits else None
        wait = min(ctx.options.probe_timeout, (slow_after or 10.0) + 1.0)
        outcome = probe(
            address,
            host_header=host_header,
            path=ctx.options.probe_path,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=wait,
            buffer_size=buffer_size,
            slow_after=slow_after,
        )
        runs.append(ProbeRun(bind, outcome, host_header, slow_after))
    if ctx.options.through_nginx:
        runs += _through_nginx(ctx)
    return runs


def _through_nginx(ctx: Context) -> list[ProbeRun]:
    """Send the same request to the addresses nginx listens on, on this host."""
    from doctor.facts.nginx import split_host_port
    from doctor.upstream import Address, probe

    try:
        config = ctx.fact("nginx")
    except FactUnavailable:
        return []
    runs = []
    seen = set()
    for listen in config.listens:
        text = listen.args[0]
        if text.startswith("unix:") or "ssl" in listen.args:
            continue
        if text.isdigit():
            host, port = "127.0.0.1", int(text)
        else:
            host, port = split_host_port(text, 80)
        if host in ("*", "0.0.0.0", ""):
            host = "127.0.0.1"
        elif host in ("[::]", "::"):
            host = "::1"
        if (host, port) in seen:
            continue
        seen.add((host, port))
        outcome = probe(
            Address("tcp", host, port, None),
            path=ctx.options.probe_path,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=ctx.options.probe_timeout,
        )
        runs.append(ProbeRun(f"nginx listen {text}", outcome, None, None, True))
    return runs
