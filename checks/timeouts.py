"""Checks that gunicorn's timeouts agree with nginx's, systemd's and a load balancer's.

Facts about gunicorn are those of gunicorn 20.x to 27.0.1 (``arbiter.py``,
``workers/*.py``). Only the sync worker runs a request in the thread that
sends the heartbeat, so only there does ``timeout`` limit a request. The
gthread worker's main loop and the async workers' heartbeat keep running
while a request is slow, and ``timeout`` only catches a worker that stopped
running (a blocked event loop, a deadlock). ``timeout = 0`` turns the check
off for every worker class.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from doctor import Context, FactUnavailable, Location, check, info, ok, warning
from doctor.addresses import bind_serves, resolve_loopback_name, tcp_and_unix_binds
from doctor.facts.upstream_probes import nginx_seconds
from doctor.settings_model import settings_table

REQUEST_LIMIT_CLASSES = ("sync", "gunicorn.workers.sync.SyncWorker")
NGINX_PROXY_TIMEOUT_DEFAULT = 60.0
# The default of keepalive_timeout inside an upstream block (nginx 1.15.3+).
NGINX_UPSTREAM_KEEPALIVE_DEFAULT = 60.0
# The default of keepalive_timeout for client connections.
NGINX_CLIENT_KEEPALIVE_DEFAULT = 75.0
# systemd's DefaultTimeoutStopSec= when system.conf does not set it.
SYSTEMD_STOP_DEFAULT = 90.0
SYSTEM_CONF = "/etc/systemd/system.conf"
MAX_TIMEOUT = 3600
MIN_TIMEOUT = 5
# A TCP connect on loopback succeeds at once unless the listen backlog is
# full, so a longer wait only keeps the client waiting.
LOOPBACK_CONNECT_MAX = 5.0
# Share of the limit above which observed request times are reported.
OBSERVED_SHARE = 0.8
SLOWEST_SHOWN = 5
# Seconds between two limits that the suggested fixes leave.
MARGIN = 5
STOP_MARGIN = 10


# --- shared helpers --------------------------------------------------------


def _loaded_settings(ctx: Context):
    settings = ctx.fact("settings")
    if settings.error:
        raise FactUnavailable(
            "gunicorn did not finish loading the configuration (see config-file)"
        )
    return settings


def _seconds(settings, name: str) -> float | None:
    """Return a numeric setting, or None when it has no numeric value."""
    if name in settings.non_literal:
        return None
    value = settings.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _required_seconds(settings, name: str) -> float:
    value = _seconds(settings, name)
    if value is not None:
        return value
    expression = settings.non_literal.get(name)
    if expression:
        raise FactUnavailable(
            f"{name} is set by an expression, {expression}, which static reading"
            " cannot evaluate; run without --static"
        )
    raise FactUnavailable(f"{name} has no numeric value ({settings.get(name)!r})")


def _secs(value: float) -> str:
    return "unlimited" if math.isinf(value) else f"{value:g} s"


def _runs(settings) -> str:
    return str(settings.worker_class_runs or settings.get("worker_class") or "sync")


def _limits_requests(settings) -> bool:
    return _runs(settings) in REQUEST_LIMIT_CLASSES


def _gunicorn_value(settings, name: str, value: float) -> str:
    source = settings.source(name)
    where = "gunicorn's default" if source.kind == "default" else str(source)
    return f"gunicorn {name} {_secs(value)} ({where})"


def _exec_location(ctx: Context) -> Location | None:
    entry = getattr(ctx.target.service, "exec_start_entry", None)
    return Location(entry.path, entry.line) if entry else None


def _gunicorn_location(ctx: Context, settings, name: str) -> Location | None:
    """Return the line that sets ``name``, or where a line setting it belongs."""
    location = settings.location(name)
    if location is not None:
        return location
    kind = settings.source(name).kind
    if kind == "env":
        entries = getattr(ctx.target.service, "environment_entries", None) or []
        for entry in reversed(entries):
            if "GUNICORN_CMD_ARGS=" in entry.value:
                return Location(entry.path, entry.line)
        return None
    if kind == "cli" or not settings.config_file:
        return _exec_location(ctx)
    return Location(settings.config_file)


def _gunicorn_fix(settings, name: str, value: float) -> str:
    """Return the line that sets ``name`` to ``value`` where it takes effect."""
    number = f"{value:g}"
    kind = settings.source(name).kind
    if kind in ("cli", "env"):
        flags = settings_table()["settings"].get(name, {}).get("cli") or [f"--{name}"]
        where = "ExecStart" if kind == "cli" else "GUNICORN_CMD_ARGS"
        return f"{flags[-1]} {number} in {where}"
    where = f" in {settings.config_file}" if settings.config_file else ""
    return f"{name} = {number}{where}"


def _nginx_config(ctx: Context):
    config = ctx.fact("nginx")
    if config.errors:
        raise FactUnavailable("nginx's configuration does not parse (see nginx-config)")
    return config


def _forwarding_targets(ctx: Context, settings, config) -> list:
    """Return one proxy_pass target per nginx location that forwards to gunicorn.

    The list is empty when gunicorn binds only inherited fds (fd://).
    """
    binds = tcp_and_unix_binds(settings)
    by_location = {}
    for target in config.proxy_targets:
        if target.kind == "variable" or target.directive != "proxy_pass":
            continue
        if any(bind_serves(bind, target, ctx) for bind in binds):
            by_location.setdefault(target.pass_location or target.location, target)
    return list(by_location.values())


def _required_targets(ctx: Context, settings, config) -> list:
    if not tcp_and_unix_binds(settings):
        raise FactUnavailable(
            "gunicorn binds only inherited fds (fd://), so which nginx location"
            " forwards to it is unknown"
        )
    targets = _forwarding_targets(ctx, settings, config)
    if not targets:
        binds = ", ".join(settings.get("bind") or [])
        raise FactUnavailable(
            f"no proxy_pass in {config.main_file} forwards to gunicorn's bind"
            f" ({binds}); nginx-upstream reports where nginx forwards"
        )
    return targets


class NginxValue(NamedTuple):
    """An nginx time in force for one proxy_pass: set, inherited or the default."""

    name: str
    seconds: float | None
    directive: object | None
    target: object

    @property
    def text(self) -> str:
        return self.directive.args[0] if self.directive and self.directive.args else ""

    @property
    def location(self) -> Location:
        if self.directive is not None:
            return self.directive.location
        return self.target.pass_location or self.target.location

    def describe(self) -> str:
        if self.directive is None:
            return (
                f"nginx {self.name} {_secs(self.seconds)} (nginx's default; not set"
                f" for {self.target.text} at {self.location})"
            )
        if self.seconds is None:
            return f"nginx {self.name} {self.text!r} ({self.location})"
        return f"nginx {self.name} {_secs(self.seconds)} ({self.location})"


def _nginx_value(target, name: str, default: float) -> NginxValue:
    directive = target.settings.get(name)
    if directive is None:
        return NginxValue(name, default, None, target)
    seconds = nginx_seconds(directive.args[0]) if directive.args else None
    return NginxValue(name, seconds, directive, target)


def _unreadable(value: NginxValue):
    return info(
        f"nginx {value.name} {value.text!r} at {value.location} is not a time the"
        " doctor can read",
        "nginx times are a number with an optional unit: ms, s, m, h, d, such as"
        " 60s or 1m30s. The comparison with gunicorn is skipped for this location.",
        fix="Check the value with: nginx -t",
        evidence=[value.describe()],
        location=value.location,
    )


def _nginx_or_none(ctx: Context):
    """Return nginx's configuration, or None when none was found.

    A configuration that does not parse is returned too, with its errors.
    """
    try:
        return ctx.fact("nginx")
    except FactUnavailable:
        return None


# --- gunicorn timeout against nginx's proxy_read_timeout -------------------


@check(
    "timeouts-read",
    area="timeouts",
    title="gunicorn's timeout and nginx's proxy_read_timeout agree",
    needs=("settings", "nginx"),
)
def timeouts_read(ctx: Context):
    """Warn when gunicorn's timeout and nginx's read and send timeouts clash.

    Looks at every nginx location whose ``proxy_pass`` reaches this
    gunicorn, with the ``proxy_read_timeout`` and ``proxy_send_timeout`` in
    force there (nginx's default is 60 s). With sync workers:

    - gunicorn's ``timeout`` not longer than ``proxy_read_timeout``: a slow
      request is aborted by gunicorn, so the client gets a 500 from gunicorn
      or a 502 from nginx ("upstream prematurely closed connection") instead
      of nginx's 504, and the worker is restarted;
    - ``proxy_read_timeout`` or ``proxy_send_timeout`` less than half of
      ``timeout``: nginx returns 504 while the worker keeps running a request
      whose response nobody reads.

    With gthread and async workers ``timeout`` is a heartbeat, not a limit
    on a request, so nginx's timeout is the only one, and the ok finding
    reports that.
    """
    settings = _loaded_settings(ctx)
    config = _nginx_config(ctx)
    timeout = _required_seconds(settings, "timeout")
    targets = _required_targets(ctx, settings, config)
    limits = _limits_requests(settings)
    findings = []
    in_force = []
    for target in targets:
        read = _nginx_value(target, "proxy_read_timeout", NGINX_PROXY_TIMEOUT_DEFAULT)
        send = _nginx_value(target, "proxy_send_timeout", NGINX_PROXY_TIMEOUT_DEFAULT)
        in_force += [read.describe(), send.describe()]
        if read.seconds is None:
            findings.append(_unreadable(read))
        elif limits and timeout > 0:
            if timeout <= read.seconds:
                findings.append(_gunicorn_first(ctx, settings, timeout, read))
            elif read.seconds < timeout / 2:
                findings.append(_nginx_gives_up(ctx, settings, timeout, read))
        if send.seconds is None:
            findings.append(_unreadable(send))
        elif limits and timeout > 0 and send.seconds < timeout / 2:
            findings.append(_nginx_gives_up(ctx, settings, timeout, send))
    if findings:
        yield from findings
        return
    evidence = [settings.describe("timeout"), *in_force]
    if not limits:
        yield ok(
            f"gunicorn's timeout is a heartbeat for {_runs(settings)} workers, so"
            " nginx's proxy_read_timeout alone limits a slow request",
            f"{_runs(settings)} workers keep sending their heartbeat while a request"
            " runs, so gunicorn never aborts a slow request, and nginx returns 504"
            " when its proxy_read_timeout runs out.",
            evidence=[*evidence, f"worker class that runs: {_runs(settings)}"],
        )
    elif timeout == 0:
        yield ok(
            "gunicorn never aborts a request (timeout = 0), so nginx's"
            " proxy_read_timeout alone limits a slow request",
            "timeouts-value reports what timeout = 0 means for hung workers.",
            evidence=evidence,
        )
    else:
        yield ok(
            f"nginx gives up on a slow request before gunicorn's timeout"
            f" ({_secs(timeout)}) aborts it, and not much earlier",
            evidence=evidence,
        )


def _major_version(settings) -> int:
    """Return gunicorn's major version, or 0 when it is unknown."""
    major = (settings.gunicorn_version or "").split(".")[0]
    return int(major) if major.isdigit() else 0


def _abort_outcome(settings) -> str:
    version = settings.gunicorn_version
    major = _major_version(settings)
    interrupted = (
        "the client gets gunicorn's 500 when the abort interrupts Python code,"
        " or nginx's 502 'upstream prematurely closed connection' when the"
        " worker is stuck in C code and has to be killed"
    )
    if major == 0:
        return f"{interrupted} (gunicorn 22 and later; older releases give the 502)"
    if major < 22:
        return (
            "nginx returns 502 'upstream prematurely closed connection'"
            f" (gunicorn {version})"
        )
    return f"{interrupted} (gunicorn {version})"


def _prefer_nginx_fix(settings, value: NginxValue) -> bool:
    """Tell whether the nginx side is the one to change.

    That is the case when gunicorn's timeout was set on purpose and nginx
    runs on its default.
    """
    return value.directive is None and settings.source("timeout").kind != "default"


def _gunicorn_first(ctx: Context, settings, timeout: float, read: NginxValue):
    relation = "shorter than" if timeout < read.seconds else "equal to"
    race = " Both are the same, so which one fires first is a race." * (
        timeout == read.seconds
    )
    gunicorn_text = _gunicorn_value(settings, "timeout", timeout)
    raise_gunicorn = _gunicorn_fix(
        settings, "timeout", math.ceil(read.seconds) + MARGIN
    )
    nginx_read = max(math.ceil(timeout / 2), math.floor(timeout) - MARGIN)
    lower_nginx = None
    if nginx_read < timeout:
        lower_nginx = (
            f"proxy_read_timeout {nginx_read}s; in the location with"
            f" {read.target.text} ({read.target.pass_location})"
        )
    if _prefer_nginx_fix(settings, read) and lower_nginx:
        fix = f"{lower_nginx}, so nginx returns 504 first; or {raise_gunicorn}"
        location = read.location
    else:
        fix = f"{raise_gunicorn}, so nginx returns 504 first"
        fix += f"; or {lower_nginx}" if lower_nginx else ""
        location = _gunicorn_location(ctx, settings, "timeout")
    return warning(
        f"{gunicorn_text} is {relation} {read.describe()}: slow requests are"
        " aborted by gunicorn before nginx can return 504",
        f"A request that runs for {_secs(timeout)} is aborted by gunicorn's master"
        f" ('WORKER TIMEOUT' in the error log) before nginx's {_secs(read.seconds)}"
        f" run out: {_abort_outcome(settings)}. The worker is then replaced, which"
        " costs a fresh start of the app." + race,
        fix=fix,
        evidence=[settings.describe("timeout"), read.describe()],
        location=location,
    )


def _nginx_gives_up(ctx: Context, settings, timeout: float, value: NginxValue):
    gunicorn_text = _gunicorn_value(settings, "timeout", timeout)
    if value.name == "proxy_read_timeout":
        failure = (
            f"After {_secs(value.seconds)} without a response nginx returns 504 and"
            " closes the connection"
        )
    else:
        failure = (
            f"nginx waits at most {_secs(value.seconds)} between two writes of a"
            " request to gunicorn, so a request body larger than the socket"
            " buffers that the app reads slowly ends in 504 ('upstream timed out"
            " ... while sending request to upstream')"
        )
    lower_gunicorn = _gunicorn_fix(
        settings, "timeout", math.ceil(value.seconds) + MARGIN
    )
    raise_nginx = (
        f"{value.name} {max(math.floor(timeout) - MARGIN, 1)}s; in the location"
        f" with {value.target.text} ({value.target.pass_location})"
    )
    if _prefer_nginx_fix(settings, value):
        fix = f"{raise_nginx}, if requests may take that long; or {lower_gunicorn}"
        location = value.location
    else:
        fix = (
            f"{lower_gunicorn}, so a worker nginx gave up on is freed soon after;"
            f" or {raise_nginx}, if requests may take that long"
        )
        location = _gunicorn_location(ctx, settings, "timeout")
    return warning(
        f"{value.describe()} is less than half of {gunicorn_text}: nginx returns"
        " 504 while the worker keeps running",
        f"{failure}, but the sync worker keeps running the request for up to"
        f" {_secs(timeout)}, serves no one else meanwhile, and its response is thrown"
        " away. Under load, abandoned requests occupy the workers.",
        fix=fix,
        evidence=[settings.describe("timeout"), value.describe()],
        location=location,
    )


# --- nginx's proxy_connect_timeout -----------------------------------------


@check(
    "timeouts-connect",
    area="timeouts",
    title="nginx's proxy_connect_timeout fits a gunicorn on this host",
    needs=("settings", "nginx"),
)
def timeouts_connect(ctx: Context):
    """Report a ``proxy_connect_timeout`` set longer than a loopback connect needs.

    A TCP connect to gunicorn on loopback is accepted at once. It waits only
    when every worker is busy and the listen backlog is full, and then a
    long ``proxy_connect_timeout`` keeps the client waiting instead of
    failing fast and letting ``proxy_next_upstream`` try another server.
    Reported when set explicitly above 5 s, and as a warning when it is also
    longer than a sync worker's ``timeout``, which suggests it was meant as
    the request timeout (that is ``proxy_read_timeout``). A unix socket is
    not affected, because with a full backlog its connect fails at once.
    """
    settings = _loaded_settings(ctx)
    config = _nginx_config(ctx)
    targets = _required_targets(ctx, settings, config)
    timeout = _seconds(settings, "timeout")
    limit = timeout if _limits_requests(settings) and timeout else None
    findings = []
    in_force = []
    for target in targets:
        connect = _nginx_value(
            target, "proxy_connect_timeout", NGINX_PROXY_TIMEOUT_DEFAULT
        )
        in_force.append(f"{connect.describe()} to {target.describe()}")
        if connect.directive is None:
            continue
        if connect.seconds is None:
            findings.append(_unreadable(connect))
            continue
        if target.kind == "unix" or not _on_loopback(ctx, target.host):
            continue
        if connect.seconds > LOOPBACK_CONNECT_MAX:
            findings.append(_long_connect(settings, connect, limit))
    if findings:
        yield from findings
        return
    yield ok(
        "nginx's proxy_connect_timeout is not set longer than a connection to"
        " gunicorn on this host needs",
        "Only an explicit value above"
        f" {_secs(LOOPBACK_CONNECT_MAX)} to a TCP address on loopback is reported.",
        evidence=in_force,
    )


def _on_loopback(ctx: Context, host: str | None) -> bool:
    addresses = resolve_loopback_name(ctx, host or "")
    try:
        return all(ipaddress.ip_address(a).is_loopback for a in addresses)
    except ValueError:
        return False


def _long_connect(settings, connect: NginxValue, limit: float | None):
    seconds = connect.seconds
    detail = (
        f"A connection to gunicorn at {connect.target.describe()} is accepted at"
        " once unless every worker is busy and the listen backlog is full. Then"
        f" nginx keeps the client waiting up to {_secs(seconds)} before returning 504,"
        " where a short timeout fails at once and lets proxy_next_upstream try"
        " another server."
    )
    fix = (
        f"proxy_connect_timeout {math.floor(LOOPBACK_CONNECT_MAX)}s; at"
        f" {connect.location}"
    )
    evidence = [connect.describe()]
    if limit is not None and seconds > limit:
        detail += (
            f" It is also longer than the {_secs(limit)} gunicorn lets a sync worker"
            " run a request: proxy_connect_timeout does not limit the request"
            " itself, proxy_read_timeout does."
        )
        return warning(
            f"{connect.describe()} is longer than gunicorn timeout"
            f" {_secs(limit)}; it limits only the connect, not the request",
            detail,
            fix=fix + " (and set proxy_read_timeout for long requests)",
            evidence=[*evidence, settings.describe("timeout")],
            location=connect.location,
        )
    return info(
        f"{connect.describe()} is longer than a connect on loopback needs",
        detail,
        fix=fix,
        evidence=evidence,
        location=connect.location,
    )


# --- graceful_timeout against systemd's TimeoutStopSec ---------------------

_TIMESPAN_UNITS = {
    **dict.fromkeys(("us", "usec", "µs", "μs"), 1e-6),
    **dict.fromkeys(("ms", "msec"), 1e-3),
    **dict.fromkeys(("", "s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "week", "weeks"), 604800.0),
    **dict.fromkeys(("M", "month", "months"), 2629800.0),
    **dict.fromkeys(("y", "year", "years"), 31557600.0),
}
_TIMESPAN_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s.]*)")


def parse_timespan(text: str) -> float:
    """Parse a systemd time span such as ``90``, ``1min 30s`` or ``infinity``.

    Returns seconds, or ``math.inf`` for ``infinity``. A bare number is in
    seconds (systemd.time(7)). Raises ValueError naming the value.
    """
    value = text.strip()
    if value == "infinity":
        return math.inf
    total = 0.0
    position = 0
    while position < len(value):
        match = _TIMESPAN_PART.match(value, position)
        if match is None or match.end() == position:
            break
        unit = match[2]
        if unit not in _TIMESPAN_UNITS:
            raise ValueError(
                f"invalid time span {text!r}: unknown unit {unit!r}; use s, min, h"
                " or ms, such as 90s or 1min 30s"
            )
        total += float(match[1]) * _TIMESPAN_UNITS[unit]
        position = match.end()
    if not value or position < len(value.rstrip()):
        raise ValueError(
            f"invalid time span {text!r}: give seconds or a span such as 90s,"
            " 1min 30s or infinity"
        )
    return total


@dataclass
class StopTimeout:
    """How long systemd waits for the service to stop, and where that is set.

    ``origin`` is the assignment in force with its file and line, such as
    ``TimeoutStopSec=10 (/etc/systemd/system/app.service:7)``.
    """

    seconds: float
    origin: str
    location: Location | None
    entry: object | None = None
    problems: list = field(default_factory=list)

    def describe(self) -> str:
        return f"systemd {self.origin}"


def stop_timeout(ctx: Context, service) -> StopTimeout:
    """Return the unit's stop timeout: TimeoutStopSec=, TimeoutSec= or the default.

    The last valid assignment of either key wins and an empty one resets to
    the default, as in systemd. An invalid value is ignored by systemd, and
    it is returned in ``problems``. ``0`` means no limit.
    """
    from doctor.unitfile import load_unit

    problems = []
    chosen = None
    for entry in service.unit.entries:
        if entry.section != "Service" or entry.key not in (
            "TimeoutStopSec",
            "TimeoutSec",
        ):
            continue
        if entry.value == "":
            chosen = None
            continue
        try:
            seconds = parse_timespan(entry.value)
        except ValueError as exc:
            problems.append((entry, str(exc)))
            continue
        chosen = (entry, seconds or math.inf)
    if chosen is not None:
        entry, seconds = chosen
        location = Location(entry.path, entry.line)
        return StopTimeout(
            seconds,
            f"{entry.key}={entry.value} ({location})",
            location,
            entry,
            problems,
        )
    manager = load_unit(ctx.fs.host(SYSTEM_CONF), SYSTEM_CONF)
    entry = manager.value("Manager", "DefaultTimeoutStopSec")
    if entry is not None:
        try:
            seconds = parse_timespan(entry.value) or math.inf
        except ValueError as exc:
            problems.append((entry, str(exc)))
        else:
            location = Location(entry.path, entry.line)
            origin = f"DefaultTimeoutStopSec={entry.value} ({location})"
            return StopTimeout(seconds, origin, None, None, problems)
    origin = "DefaultTimeoutStopSec=90s (systemd's default)"
    return StopTimeout(SYSTEMD_STOP_DEFAULT, origin, None, None, problems)


_QUICK_STOP_SIGNALS = {"SIGINT", "INT", "2", "SIGQUIT", "QUIT", "3"}


@check(
    "timeouts-graceful",
    area="timeouts",
    title="systemd waits for gunicorn's graceful shutdown",
    needs=("settings", "unit"),
)
def timeouts_graceful(ctx: Context):
    """Warn when systemd kills the service before gunicorn finishes draining.

    On ``systemctl stop`` or ``restart`` systemd sends SIGTERM, and gunicorn
    lets its workers finish their requests for up to ``graceful_timeout``
    seconds (default 30) before it kills them. systemd sends SIGKILL to
    every process of the service after ``TimeoutStopSec=`` (``TimeoutSec=``,
    else ``DefaultTimeoutStopSec=`` of ``/etc/systemd/system.conf``, default
    90 s). When that is not longer, requests still running are cut and the
    master's own shutdown does not finish. ``KillSignal=SIGINT`` or
    ``SIGQUIT`` makes gunicorn stop at once, without draining.
    """
    settings = _loaded_settings(ctx)
    service = ctx.fact("unit")
    graceful = _required_seconds(settings, "graceful_timeout")
    stop = stop_timeout(ctx, service)
    findings = [_invalid_timespan(entry, message) for entry, message in stop.problems]
    graceful_text = _gunicorn_value(settings, "graceful_timeout", graceful)
    evidence = [settings.describe("graceful_timeout"), stop.describe()]
    kill = service.unit.value("Service", "KillSignal")
    if kill is not None and kill.value.strip().upper() in _QUICK_STOP_SIGNALS:
        location = Location(kill.path, kill.line)
        findings.append(
            info(
                f"KillSignal={kill.value} ({location}) makes gunicorn stop at once:"
                f" {graceful_text} never applies",
                "gunicorn treats SIGINT and SIGQUIT as a quick shutdown and kills"
                " its workers without letting them finish their requests; SIGTERM"
                " is its graceful stop.",
                fix=f"Remove KillSignal= from {kill.path} (systemd's default is"
                " SIGTERM)",
                evidence=[*evidence, f"KillSignal={kill.value} ({location})"],
                location=location,
            )
        )
    elif stop.seconds <= graceful and not _sigkill_disabled(service):
        findings.append(_stop_too_short(ctx, settings, service, graceful, stop))
    if findings:
        yield from findings
        return
    if stop.seconds <= graceful:
        send_sigkill = service.unit.value("Service", "SendSIGKILL")
        yield ok(
            f"SendSIGKILL={send_sigkill.value} ({send_sigkill.path}:"
            f"{send_sigkill.line}): systemd does not kill gunicorn's draining"
            " workers",
            f"{stop.describe()} is not longer than {graceful_text}, but systemd"
            " only stops waiting at the timeout and leaves the processes running.",
            evidence=evidence,
        )
        return
    yield ok(
        f"{stop.describe()} is longer than {graceful_text}",
        f"systemd waits {_secs(stop.seconds)} for the service to stop, so"
        " gunicorn's workers can finish their requests first.",
        evidence=evidence,
    )


def _sigkill_disabled(service) -> bool:
    """Tell whether ``SendSIGKILL=no`` keeps systemd from killing at the timeout."""
    entry = service.unit.value("Service", "SendSIGKILL")
    return entry is not None and entry.value.strip().lower() in _FALSE_WORDS


_FALSE_WORDS = ("no", "false", "off", "0", "n", "f")


def _invalid_timespan(entry, message: str):
    location = Location(entry.path, entry.line)
    return warning(
        f"{entry.key}={entry.value} ({location}) is not a time span systemd accepts",
        f"{message}. systemd logs the error and ignores the line, so the previous"
        " or the default value applies.",
        fix=f"{entry.key}=90s (seconds, or a span such as 1min 30s, or infinity)",
        evidence=[f"{entry.key}={entry.value}"],
        location=location,
    )


def _stop_too_short(ctx: Context, settings, service, graceful: float, stop):
    graceful_text = _gunicorn_value(settings, "graceful_timeout", graceful)
    relation = "shorter than" if stop.seconds < graceful else "equal to"
    unit_fix = (
        f"TimeoutStopSec={math.ceil(graceful) + STOP_MARGIN}s in [Service] of"
        f" {service.unit.path}"
    )
    if stop.location is not None:
        location = stop.location
    else:
        location = settings.location("graceful_timeout") or Location(service.unit.path)
    fix = unit_fix
    if stop.seconds > MARGIN:
        lower = _gunicorn_fix(
            settings, "graceful_timeout", math.floor(stop.seconds) - MARGIN
        )
        fix += f"; or {lower}"
    return warning(
        f"{stop.describe()} is {relation} {graceful_text}: systemd kills workers"
        " still finishing requests",
        "On stop or restart gunicorn lets workers finish their requests for up to"
        f" {_secs(graceful)}, but systemd sends SIGKILL to every process of the"
        f" service after {_secs(stop.seconds)}. Requests still running then are"
        " cut (nginx logs 502), and the master's shutdown does not finish: its"
        " exit hooks do not run and the pidfile stays behind.",
        fix=fix,
        evidence=[settings.describe("graceful_timeout"), stop.describe()],
        location=location,
    )


# --- keepalive against nginx's upstream cache and a load balancer ----------


@check(
    "timeouts-keepalive",
    area="timeouts",
    title="Idle connections are closed by the client side first",
    needs=("settings",),
)
def timeouts_keepalive(ctx: Context):
    """Warn when the side that reuses idle connections keeps them longer.

    A client that reuses an idle connection the server has just closed gets
    a reset, and nginx or the load balancer returns 502 for that request.
    So the client side must drop idle connections first:

    - nginx keeping upstream connections (``keepalive N;`` in the upstream
      block, ``proxy_http_version 1.1;`` and ``proxy_set_header Connection
      "";``): the upstream ``keepalive_timeout`` (default 60 s) must be
      shorter than gunicorn's ``keepalive`` (default 2 s);
    - a load balancer talking to gunicorn directly (``--lb-idle-timeout``):
      its idle timeout must be shorter than gunicorn's ``keepalive``;
    - a load balancer in front of nginx: its idle timeout must be shorter
      than nginx's client ``keepalive_timeout`` (default 75 s).

    Sync workers, and any worker with ``keepalive = 0``, close the
    connection after every response, so they are not exposed.
    """
    settings = _loaded_settings(ctx)
    keepalive = _required_seconds(settings, "keepalive")
    lb_idle = ctx.options.lb_idle_timeout
    config = _nginx_or_none(ctx)
    if config is not None and config.errors:
        raise FactUnavailable("nginx's configuration does not parse (see nginx-config)")
    targets = _forwarding_targets(ctx, settings, config) if config else []
    if not targets and lb_idle is None:
        reason = (
            "no nginx configuration is known"
            if config is None
            else "nginx does not proxy_pass to gunicorn's bind"
        )
        raise FactUnavailable(
            f"{reason} and no load balancer idle timeout was given (--lb-idle-timeout),"
            " so nothing keeps connections to gunicorn to compare with"
        )
    closes = _closes_every_connection(settings, keepalive)
    findings = []
    evidence = [
        settings.describe("keepalive"),
        f"worker class that runs: {_runs(settings)}",
    ]
    if targets:
        for target in targets:
            findings += _nginx_upstream_keepalive(ctx, settings, config, target, closes)
            if lb_idle is not None:
                # Locations of one server share its keepalive_timeout line.
                titles = {finding.title for finding in findings}
                findings += [
                    finding
                    for finding in _lb_before_nginx(target, lb_idle)
                    if finding.title not in titles
                ]
        evidence += [
            f"nginx forwards with {t.text} ({t.pass_location})" for t in targets
        ]
    elif lb_idle is not None and closes is None:
        findings += _lb_before_gunicorn(ctx, settings, keepalive, lb_idle, config)
    if findings:
        yield from findings
        return
    if closes and not targets:
        yield ok(
            f"{closes}, so the load balancer cannot reuse an idle connection that"
            " gunicorn closed",
            evidence=[*evidence, f"load balancer idle timeout {_secs(lb_idle)}"],
        )
        return
    if lb_idle is not None:
        evidence.append(f"load balancer idle timeout {_secs(lb_idle)}")
    yield ok(
        "every idle connection to gunicorn (and to nginx) is closed by the side"
        " that reuses it first",
        evidence=evidence,
    )


def _closes_every_connection(settings, keepalive: float) -> str | None:
    """Return why gunicorn closes every connection after one response, if it does."""
    if _limits_requests(settings):
        return "sync workers close the connection after every response"
    if keepalive == 0:
        return "keepalive = 0 makes gunicorn close the connection after every response"
    return None


def _nginx_upstream_keepalive(ctx: Context, settings, config, target, closes):
    block = config.upstreams.get(target.upstream) if target.upstream else None
    if block is None or block.keepalive is None:
        return []
    keepalive_text = f"keepalive {block.keepalive.args[0]} ({block.keepalive.location})"
    connection = target.headers.get("connection")
    missing = _missing_reuse_lines(target, connection)
    if missing:
        return [_keepalive_inactive(block, target, keepalive_text, missing, connection)]
    if closes:
        return [
            info(
                f"nginx keeps upstream connections to gunicorn with {keepalive_text},"
                f" but {closes}",
                "gunicorn sends 'Connection: close' with every response, so"
                " nginx opens a new connection per request anyway.",
                fix="Remove keepalive from the upstream block, or use worker_class ="
                ' "gthread" with keepalive above nginx\'s upstream keepalive_timeout',
                evidence=[keepalive_text, settings.describe("keepalive")],
                location=block.keepalive.location,
            )
        ]
    return _keepalive_race(ctx, settings, block, keepalive_text)


def _missing_reuse_lines(target, connection) -> list[str]:
    """Return the lines a location lacks for nginx to reuse upstream connections."""
    missing = []
    version = target.settings.get("proxy_http_version")
    if version is None or version.args[:1] != ("1.1",):
        missing.append("proxy_http_version 1.1;")
    value = connection.args[1] if connection and len(connection.args) > 1 else None
    if value not in ("", "keep-alive"):
        missing.append('proxy_set_header Connection "";')
    return missing


def _keepalive_race(ctx: Context, settings, block, keepalive_text: str) -> list:
    keepalive = settings.get("keepalive")
    if block.keepalive_timeout is not None:
        nginx_idle = nginx_seconds(block.keepalive_timeout.args[0])
        nginx_text = (
            f"nginx upstream keepalive_timeout {_secs(nginx_idle or 0)}"
            f" ({block.keepalive_timeout.location})"
        )
        nginx_location = block.keepalive_timeout.location
    else:
        nginx_idle = NGINX_UPSTREAM_KEEPALIVE_DEFAULT
        nginx_text = (
            f"nginx upstream keepalive_timeout {_secs(nginx_idle)} (nginx's default;"
            f" not set in upstream {block.name} at {block.location})"
        )
        nginx_location = block.location
    if nginx_idle is None or nginx_idle < keepalive:
        return []
    gunicorn_text = _gunicorn_value(settings, "keepalive", keepalive)
    raise_gunicorn = _gunicorn_fix(
        settings, "keepalive", math.ceil(nginx_idle) + MARGIN
    )
    lower_nginx = max(math.floor(keepalive) - 1, 1)
    fix = (
        f"{raise_gunicorn}; or keepalive_timeout {lower_nginx}s; in upstream"
        f" {block.name} ({nginx_location}, nginx 1.15.3 or later)"
    )
    return [
        warning(
            f"{nginx_text} is not shorter than {gunicorn_text}: nginx reuses"
            " connections gunicorn already closed",
            f"nginx keeps idle connections to gunicorn with {keepalive_text} for"
            f" {_secs(nginx_idle)}, but gunicorn closes them after {_secs(keepalive)}"
            " idle. A request nginx sends on a connection gunicorn is closing fails"
            " with 'upstream prematurely closed connection' or 'Connection reset by"
            " peer', and nginx returns 502 when it cannot retry (non-idempotent"
            " requests such as POST).",
            fix=fix,
            evidence=[keepalive_text, nginx_text, settings.describe("keepalive")],
            location=_gunicorn_location(ctx, settings, "keepalive"),
        )
    ]


def _keepalive_inactive(block, target, keepalive_text, missing, connection):
    detail = (
        "nginx speaks HTTP/1.0 to upstream servers and sends 'Connection: close'"
        " unless the location sets both lines, so every request opens a new"
        " connection to gunicorn."
    )
    evidence = [keepalive_text, f"{target.text} ({target.pass_location})"]
    if connection is not None:
        evidence.append(
            f"proxy_set_header {' '.join(connection.args)} ({connection.location})"
        )
        if "$" in " ".join(connection.args):
            detail += (
                " The Connection header comes from a variable; when it is empty for"
                " ordinary requests, nginx does keep the connections."
            )
    return info(
        f"upstream {block.name} has {keepalive_text}, but the location with"
        f" {target.text} does not reuse connections",
        detail,
        fix=" ".join(missing) + f" in the location at {target.pass_location}",
        evidence=evidence,
        location=target.pass_location,
    )


def _lb_before_nginx(target, lb_idle: float):
    directive = target.settings.get("keepalive_timeout")
    if directive is not None:
        idle = nginx_seconds(directive.args[0]) if directive.args else None
        text = f"nginx keepalive_timeout {_secs(idle or 0)} ({directive.location})"
        location = directive.location
    else:
        idle = NGINX_CLIENT_KEEPALIVE_DEFAULT
        text = (
            f"nginx keepalive_timeout {_secs(idle)} (nginx's default; not set for"
            f" {target.text} at {target.pass_location})"
        )
        location = target.pass_location
    if idle is None or idle == 0 or idle > lb_idle:
        return []
    return [
        warning(
            f"load balancer idle timeout {_secs(lb_idle)} (--lb-idle-timeout) is not"
            f" shorter than {text}: the load balancer reuses connections nginx closed",
            f"nginx closes an idle client connection after {_secs(idle)}, while the"
            f" load balancer keeps it for {_secs(lb_idle)}. A request it sends on a"
            " connection nginx is closing fails, and the load balancer returns 502.",
            fix=f"keepalive_timeout {math.ceil(lb_idle) + MARGIN}s; in the server"
            f" block ({location})",
            evidence=[text, f"load balancer idle timeout {_secs(lb_idle)}"],
            location=location,
        )
    ]


def _lb_before_gunicorn(ctx: Context, settings, keepalive, lb_idle, config):
    if keepalive > lb_idle:
        return []
    gunicorn_text = _gunicorn_value(settings, "keepalive", keepalive)
    reason = (
        "No nginx configuration is known"
        if config is None
        else "nginx does not proxy_pass to gunicorn's bind"
    )
    return [
        warning(
            f"load balancer idle timeout {_secs(lb_idle)} (--lb-idle-timeout) is not"
            f" shorter than {gunicorn_text}: the load balancer reuses connections"
            " gunicorn closed",
            f"{reason}, so the load balancer is taken to connect to gunicorn directly."
            f" gunicorn closes an idle connection after {_secs(keepalive)}, while"
            f" the load balancer keeps it for {_secs(lb_idle)}; a request sent on a"
            " connection gunicorn is closing fails, and the load balancer returns"
            " 502 at random moments.",
            fix=_gunicorn_fix(settings, "keepalive", math.ceil(lb_idle) + MARGIN),
            evidence=[
                settings.describe("keepalive"),
                f"worker class: {_runs(settings)}",
            ],
            location=_gunicorn_location(ctx, settings, "keepalive"),
        )
    ]


# --- values that make no sense on their own --------------------------------


@check(
    "timeouts-value",
    area="timeouts",
    title="timeout and graceful_timeout have usable values",
    needs=("settings",),
)
def timeouts_value(ctx: Context):
    """Flag a ``timeout`` or ``graceful_timeout`` that defeats its purpose.

    ``timeout = 0`` turns off the detection of hung workers, for every
    worker class. A ``timeout`` above 3600 s leaves a hung worker in place
    for an hour or more. One below 5 s kills workers after a short stall,
    with sync workers every request that takes longer, and before gunicorn
    22.0 workers whose app takes longer to import.
    ``graceful_timeout = 0`` kills workers in the middle of their requests
    on every stop and reload. gunicorn itself rejects negative values, and
    config-file reports that.
    """
    settings = _loaded_settings(ctx)
    timeout = _seconds(settings, "timeout")
    graceful = _seconds(settings, "graceful_timeout")
    if timeout is None and graceful is None:
        _required_seconds(settings, "timeout")
    findings = []
    if timeout is not None:
        findings += _timeout_findings(ctx, settings, timeout)
    if graceful == 0:
        findings.append(
            warning(
                "graceful_timeout = 0: every stop and reload kills workers in the"
                " middle of their requests",
                "gunicorn waits graceful_timeout seconds for workers to finish their"
                " requests after SIGTERM or SIGHUP, then kills them. With 0 it kills"
                " them at once, and the requests in flight fail.",
                fix=_gunicorn_fix(settings, "graceful_timeout", 30),
                evidence=[settings.describe("graceful_timeout")],
                location=_gunicorn_location(ctx, settings, "graceful_timeout"),
            )
        )
    if findings:
        yield from findings
        return
    described = [
        settings.describe(name)
        for name, value in (("timeout", timeout), ("graceful_timeout", graceful))
        if value is not None
    ]
    yield ok(
        "; ".join(described) + ": usable values",
        evidence=[*described, f"worker class that runs: {_runs(settings)}"],
    )


def _timeout_findings(ctx: Context, settings, timeout: float) -> list:
    runs = _runs(settings)
    limits = _limits_requests(settings)
    location = _gunicorn_location(ctx, settings, "timeout")
    evidence = [settings.describe("timeout"), f"worker class that runs: {runs}"]
    if timeout == 0:
        if limits:
            consequence = (
                "a sync worker stuck on one request (a call without a timeout, a"
                " deadlock) is lost until the next restart, and each one lost"
                " removes one request slot"
            )
        else:
            consequence = (
                f"a {runs} worker whose loop stops (a blocked event loop, a"
                " deadlock) is never replaced"
            )
        make = warning if limits else info
        return [
            make(
                "timeout = 0: gunicorn never kills a hung worker",
                f"With timeout = 0 the master does not watch its workers' heartbeat:"
                f" {consequence}.",
                fix=_gunicorn_fix(settings, "timeout", 30),
                evidence=evidence,
                location=location,
            )
        ]
    if timeout > MAX_TIMEOUT:
        make = warning if limits else info
        return [
            make(
                f"timeout = {timeout:g}: a hung worker is replaced only after"
                f" {timeout / 3600:.1f} hours",
                "gunicorn notices a worker that stopped sending its heartbeat only"
                f" after {_secs(timeout)}; until then it serves nothing. For slow"
                " requests behind nginx, proxy_read_timeout is the limit to raise,"
                " and work that takes hours belongs in a background job.",
                fix=_gunicorn_fix(settings, "timeout", 120 if limits else 30),
                evidence=evidence,
                location=location,
            )
        ]
    if timeout < MIN_TIMEOUT:
        stall = (
            "A CPU-bound stretch, a blocked event loop or a busy host easily delays"
            f" a worker's heartbeat by {_secs(timeout)}, and gunicorn then kills"
            " and restarts the worker."
        )
        consequences = [stall]
        if limits:
            consequences.append(
                "With sync workers every request that runs longer than"
                f" {_secs(timeout)} is aborted as well."
            )
        if _major_version(settings) < 22:
            # gunicorn 22 moved the heartbeat to time.monotonic(), and a worker
            # that has not sent one yet is no longer timed out while it boots.
            consequences.append(
                "Before gunicorn 22.0 the app's import counts too, so a slow"
                " import makes workers restart in a loop."
            )
        return [
            warning(
                f"timeout = {timeout:g}: workers are killed after {_secs(timeout)}"
                " without a heartbeat",
                " ".join(consequences),
                fix=_gunicorn_fix(settings, "timeout", 30),
                evidence=evidence,
                location=location,
            )
        ]
    return []


# --- request times observed in the access log ------------------------------


@check(
    "timeouts-observed",
    area="timeouts",
    title="Requests finish well within the timeouts",
    needs=("settings", "access_log"),
)
def timeouts_observed(ctx: Context):
    """Warn when the slowest requests in the access log come close to a timeout.

    Reads the end of gunicorn's access log within ``--since`` and
    ``--log-bytes``: the ``accesslog`` file, or the unit's journal for
    ``-``. Each request's duration comes from the ``%(D)s``, ``%(L)s``,
    ``%(M)s`` or ``%(T)s`` field of ``access_log_format``. The p99 is
    compared with the shorter limit on a request: the sync worker's
    ``timeout`` or nginx's ``proxy_read_timeout``. Above 80 % of the limit,
    the slowest requests are shown. Without a duration field in the format
    the check is skipped, and the reason names the format line to add.
    """
    settings = _loaded_settings(ctx)
    log = ctx.fact("access_log")
    if not log.requests:
        yield from _no_requests(settings, log)
        return
    durations = sorted(request.seconds for request in log.requests)
    p50 = _percentile(durations, 50)
    p99 = _percentile(durations, 99)
    maximum = durations[-1]
    stats = (
        f"p50 {p50:.3f} s, p99 {p99:.3f} s, max {maximum:.3f} s over"
        f" {len(durations)} requests"
    )
    scope = _scope(log)
    limit = _request_limit(ctx, settings)
    evidence = [f"{stats} in {scope}", log.format_origin]
    resolution = (
        " %(T)s records whole seconds, so each time is rounded down."
        if log.format.atom == "T"
        else ""
    )
    if limit is None:
        yield ok(
            f"{stats}; no timeout limits a request",
            f"gunicorn's timeout is a heartbeat for {_runs(settings)} workers (or"
            " 0), and no nginx location that forwards to gunicorn is known."
            + resolution,
            evidence=evidence,
        )
        return
    seconds, text, location, fix_line = limit
    evidence.append(text)
    if p99 <= OBSERVED_SHARE * seconds:
        yield ok(
            f"{stats}: p99 is {p99 / seconds:.0%} of the {_secs(seconds)} limit",
            resolution.strip(),
            evidence=evidence,
        )
        return
    slowest = sorted(log.requests, key=lambda r: r.seconds, reverse=True)
    suggested = math.ceil(p99 / OBSERVED_SHARE) + 1
    yield warning(
        f"p99 request time {p99:.2f} s is {p99 / seconds:.0%} of the"
        f" {_secs(seconds)} limit: slow requests are close to being cut",
        f"Request times in {scope}: {stats}. The limit is {text}; a request that"
        " runs longer is cut, and requests already cut are not counted with"
        f" their full time.{resolution}",
        fix=f"Make the slowest requests below faster or move them to a background"
        f" job; if they must take this long, raise the limit to {suggested} s:"
        f" {fix_line(suggested)}",
        evidence=[
            *evidence,
            *(f"{r.seconds:.3f} s: {r.line}" for r in slowest[:SLOWEST_SHOWN]),
        ],
        location=location,
    )


def _no_requests(settings, log):
    if not log.tail.lines:
        raise FactUnavailable(f"{_scope(log)} contains no request in the window read")
    detail = (
        "The lines were written with another format: the format changed since, or"
        " a logging configuration (logconfig, logconfig_dict) writes this file."
    )
    if log.format.atom == "M":
        detail += " gunicorn before 20.1.0 writes '-' for %(M)s, so use %(D)s there."
    yield info(
        f"none of the {len(log.tail.lines)} lines read from {log.path} matches"
        " access_log_format, so no request time can be read",
        detail,
        fix="Make access_log_format the format of the file, with %(D)s in it.",
        evidence=[log.format_origin, *log.unmatched_samples],
        location=settings.location("access_log_format"),
    )


def _scope(log) -> str:
    scope = log.path
    if log.tail.truncated:
        scope += f" (its last {log.tail.bytes_read} bytes)"
    return scope


def _percentile(ordered: list[float], percent: float) -> float:
    """Return the nearest-rank percentile of an ascending list."""
    rank = max(math.ceil(percent / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def _request_limit(ctx: Context, settings):
    """Return the shortest limit on a request: seconds, text, location, fix.

    The fix is a function of the suggested number of seconds.
    """
    limits = []
    timeout = _seconds(settings, "timeout")
    if _limits_requests(settings) and timeout:
        limits.append(
            (
                timeout,
                _gunicorn_value(settings, "timeout", timeout),
                _gunicorn_location(ctx, settings, "timeout"),
                lambda suggested: (
                    _gunicorn_fix(settings, "timeout", suggested)
                    + " (and proxy_read_timeout above it)"
                ),
            )
        )
    config = _nginx_or_none(ctx)
    usable = config is not None and not config.errors
    targets = _forwarding_targets(ctx, settings, config) if usable else []
    for target in targets:
        read = _nginx_value(target, "proxy_read_timeout", NGINX_PROXY_TIMEOUT_DEFAULT)
        if read.seconds:
            limits.append(
                (
                    read.seconds,
                    read.describe(),
                    read.location,
                    lambda suggested, read=read: (
                        f"proxy_read_timeout {suggested}s; at {read.location}"
                    ),
                )
            )
    if not limits:
        return None
    return min(limits, key=lambda limit: limit[0])
