"""nginx's configuration as it concerns this deployment, parsed with crossplane.

The config comes from ``--nginx FILE``, else ``/etc/nginx/nginx.conf`` under
the root, else the ``-c`` of the running nginx master. ``include`` is followed
by the doctor itself, file by file, so that absolute include paths resolve
under ``--root`` as they would on the host the tree came from.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from doctor.context import Context, FactUnavailable, fact
from doctor.findings import Location

DEFAULT_CONFIG = "/etc/nginx/nginx.conf"
NGINX_UNIT_PATHS = (
    "/etc/systemd/system/nginx.service",
    "/lib/systemd/system/nginx.service",
    "/usr/lib/systemd/system/nginx.service",
)
MAX_INCLUDE_DEPTH = 16
# Directives whose value matters per location, inherited from server and http.
LOCATION_SETTINGS = (
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "proxy_buffer_size",
    "client_max_body_size",
    "proxy_http_version",
    # The client-side idle timeout (http, server, location); the one inside
    # an upstream block is collected in UpstreamBlock instead.
    "keepalive_timeout",
)


class Directive(NamedTuple):
    name: str
    args: tuple[str, ...]
    location: Location


@dataclass(frozen=True)
class ProxyTarget:
    """One address nginx forwards requests to, and where the config says so."""

    kind: str  # "tcp", "unix", "upstream" member, or "variable"
    host: str | None
    port: int | None
    path: str | None
    location: Location
    text: str
    directive: str = "proxy_pass"
    upstream: str | None = None
    server_names: tuple[str, ...] = ()
    settings: dict[str, Directive] = field(default_factory=dict, compare=False)
    # The proxy_pass line itself; ``location`` is the upstream's server line
    # for an upstream member.
    pass_location: Location | None = field(default=None, compare=False)
    # Effective proxy_set_header lines by lower-case header name. A level that
    # sets any header replaces every inherited one, as in nginx.
    headers: dict[str, Directive] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "variable":
            return self.text
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


class UpstreamBlock(NamedTuple):
    """An ``upstream`` block's connection cache: ``keepalive`` and its idle timeout."""

    name: str
    location: Location
    keepalive: Directive | None = None
    keepalive_timeout: Directive | None = None


@dataclass
class NginxConfig:
    main_file: str
    source: str
    files: list[str] = field(default_factory=list)
    errors: list[tuple[str, int | None, str]] = field(default_factory=list)
    user: str | None = None
    user_location: Location | None = None
    error_logs: list[Directive] = field(default_factory=list)
    listens: list[Directive] = field(default_factory=list)
    proxy_targets: list[ProxyTarget] = field(default_factory=list)
    master_pid: int | None = None
    private_tmp: bool | None = None
    upstreams: dict[str, UpstreamBlock] = field(default_factory=dict)


@fact("nginx")
def nginx(ctx: Context) -> NginxConfig:
    main_file, source = _config_path(ctx)
    config = NginxConfig(main_file=main_file, source=source)
    config.master_pid = _master_pid(ctx)
    config.private_tmp = _private_tmp(ctx)
    parsed = _parse_tree(ctx, main_file, config)
    config.upstreams = _upstream_blocks(parsed)
    _walk(parsed, config, context={}, server_names=(), upstreams=_upstreams(parsed))
    return config


def _config_path(ctx: Context) -> tuple[str, str]:
    explicit = getattr(ctx.target, "nginx", None)
    if explicit:
        return explicit.value, explicit.source
    if ctx.static and ctx.fs.is_live:
        # A CI runner's own nginx has nothing to do with the code under test.
        raise FactUnavailable(
            "static mode reads no nginx configuration of this host; name the"
            " deployment's with --nginx FILE"
        )
    if ctx.fs.host(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG, "default location under the root"
    if ctx.fs.is_live and not ctx.static:
        for info in ctx.fact("process_table").values():
            cmdline = list(info.cmdline)
            if cmdline and cmdline[0].startswith("nginx: master process"):
                words = cmdline[0].split()
                if "-c" in words[:-1]:
                    return words[
                        words.index("-c") + 1
                    ], f"-c of nginx master pid {info.pid}"
    raise FactUnavailable(
        f"no nginx configuration found ({DEFAULT_CONFIG} does not exist under the"
        " root and no nginx master runs); name it with --nginx"
    )


def _master_pid(ctx: Context) -> int | None:
    try:
        table = ctx.fact("process_table")
    except FactUnavailable:
        return None
    for info in table.values():
        if info.cmdline and info.cmdline[0].startswith("nginx: master process"):
            return info.pid
    return None


def _private_tmp(ctx: Context) -> bool | None:
    from doctor.unitfile import load_unit

    for path in NGINX_UNIT_PATHS:
        host = ctx.fs.host(path)
        if host.is_file():
            unit = load_unit(host, path)
            entry = unit.value("Service", "PrivateTmp")
            if entry is None:
                return False
            return entry.value.strip().lower() in ("yes", "true", "1", "on")
    return None


def _parse_tree(ctx: Context, path: str, config: NginxConfig, depth: int = 0) -> list:
    """Parse ``path`` and splice the files its ``include`` lines name."""
    import crossplane

    host = ctx.fs.host(path)
    if not host.is_file():
        config.errors.append((path, None, f"{path} does not exist or is not a file"))
        return []
    if not os.access(host, os.R_OK):
        # nginx's master reads its files as root; this is the doctor's own limit.
        raise FactUnavailable(
            f"the doctor (uid {os.getuid()}) cannot read {path}; run it as root"
        )
    config.files.append(path)
    payload = crossplane.parse(
        str(host),
        single=True,
        catch_errors=True,
        comments=False,
        check_ctx=depth == 0,
        check_args=True,
    )
    for result in payload["config"]:
        for problem in result.get("errors", []):
            config.errors.append((path, problem.get("line"), problem.get("error", "")))
        return _splice(ctx, result.get("parsed", []), path, config, depth)
    return []


def _splice(ctx: Context, parsed: list, path: str, config: NginxConfig, depth: int):
    spliced = []
    for directive in parsed:
        directive["file"] = path
        if directive["directive"] == "include" and directive["args"]:
            if depth >= MAX_INCLUDE_DEPTH:
                config.errors.append(
                    (path, directive["line"], "includes nest too deep")
                )
                continue
            for included in _expand_include(ctx, directive["args"][0], config):
                spliced.extend(_parse_tree(ctx, included, config, depth + 1))
            continue
        if "block" in directive:
            directive["block"] = _splice(ctx, directive["block"], path, config, depth)
        spliced.append(directive)
    return spliced


def _expand_include(ctx: Context, pattern: str, config: NginxConfig) -> list[str]:
    if not pattern.startswith("/"):
        pattern = posixpath.join(posixpath.dirname(config.main_file), pattern)
    if not any(ch in pattern for ch in "*?["):
        return [pattern]
    matches = sorted(glob.glob(str(ctx.fs.host(pattern))))
    return [ctx.fs.display(m) for m in matches]


def _location(directive: dict) -> Location:
    return Location(directive["file"], directive.get("line"))


def _upstreams(parsed: list) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for directive in parsed:
        if directive["directive"] == "upstream" and directive["args"]:
            found[directive["args"][0]] = [
                d for d in directive.get("block", []) if d["directive"] == "server"
            ]
        elif "block" in directive:
            for name, servers in _upstreams(directive["block"]).items():
                found.setdefault(name, servers)
    return found


def _upstream_blocks(parsed: list) -> dict[str, UpstreamBlock]:
    found: dict[str, UpstreamBlock] = {}
    for directive in parsed:
        if directive["directive"] == "upstream" and directive["args"]:
            cache = {}
            for inner in directive.get("block", []):
                if inner["directive"] in ("keepalive", "keepalive_timeout"):
                    cache[inner["directive"]] = Directive(
                        inner["directive"], tuple(inner["args"]), _location(inner)
                    )
            name = directive["args"][0]
            found.setdefault(
                name,
                UpstreamBlock(
                    name,
                    _location(directive),
                    cache.get("keepalive"),
                    cache.get("keepalive_timeout"),
                ),
            )
        elif "block" in directive:
            for name, block in _upstream_blocks(directive["block"]).items():
                found.setdefault(name, block)
    return found


def _walk(
    parsed, config: NginxConfig, context, server_names, upstreams, headers=None
) -> None:
    context = dict(context)
    level_headers = {}
    for directive in parsed:
        name = directive["directive"]
        if name in LOCATION_SETTINGS:
            context[name] = Directive(
                name, tuple(directive["args"]), _location(directive)
            )
        elif name == "proxy_set_header" and directive["args"]:
            level_headers[directive["args"][0].lower()] = Directive(
                name, tuple(directive["args"]), _location(directive)
            )
    headers = level_headers or dict(headers or {})
    for directive in parsed:
        name, args = directive["directive"], directive["args"]
        if name == "user" and args and config.user is None:
            config.user = args[0]
            config.user_location = _location(directive)
        elif name == "error_log" and args:
            config.error_logs.append(Directive(name, tuple(args), _location(directive)))
        elif name == "listen" and args:
            config.listens.append(Directive(name, tuple(args), _location(directive)))
        elif name in ("proxy_pass", "uwsgi_pass", "fastcgi_pass") and args:
            config.proxy_targets.extend(
                _targets(directive, args[0], upstreams, server_names, context, headers)
            )
        if "block" in directive and name != "upstream":
            names = server_names
            if name == "server":
                names = tuple(
                    arg
                    for d in directive["block"]
                    if d["directive"] == "server_name"
                    for arg in d["args"]
                )
            _walk(directive["block"], config, context, names, upstreams, headers)


_URL = re.compile(r"^(?:(?P<scheme>[a-z]+)://)?(?P<rest>.*)$")


def _targets(
    directive, value, upstreams, server_names, context, headers=None
) -> list[ProxyTarget]:
    location = _location(directive)
    common = {
        "location": location,
        "text": f"{directive['directive']} {value}",
        "directive": directive["directive"],
        "server_names": server_names,
        "settings": dict(context),
        "pass_location": location,
        "headers": dict(headers or {}),
    }
    if "$" in value:
        return [ProxyTarget("variable", None, None, None, **common)]
    match = _URL.match(value)
    scheme, rest = match["scheme"] or "http", match["rest"]
    if rest.startswith("unix:"):
        path = rest[len("unix:") :].split(":", 1)[0]
        return [ProxyTarget("unix", None, None, path, **common)]
    hostport = rest.split("/", 1)[0]
    host, port = split_host_port(hostport, 443 if scheme == "https" else 80)
    if hostport in upstreams and not hostport.count(":"):
        members = []
        for server in upstreams[hostport]:
            address = server["args"][0] if server["args"] else ""
            member = dict(common, location=_location(server), upstream=hostport)
            if address.startswith("unix:"):
                members.append(ProxyTarget("unix", None, None, address[5:], **member))
            else:
                member_host, member_port = split_host_port(address, 80)
                members.append(
                    ProxyTarget("tcp", member_host, member_port, None, **member)
                )
        return members
    return [ProxyTarget("tcp", host, port, None, **common)]


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port``, ``[v6]:port`` or a bare host, as nginx reads them."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else default_port
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return text, default_port
