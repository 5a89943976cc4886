"""The gunicorn, nginx and kernel logs of a deployment, read from the end.

Each fact returns a LogEvidence: the tails that were read, each with the
error that spoiled it if any, and the events classified in them. A log file
that is missing or unreadable gives a tail with ``error`` set rather than
FactUnavailable, so that a check can report the path. FactUnavailable means
there was no log to look for, or no way to read it.

The window comes from the options: ``since`` (a datetime, a timedelta back
from now, or text that ``parse_since`` accepts) and ``log_bytes``, the
maximum number of bytes read from each log.
"""

from __future__ import annotations

import functools
import posixpath
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta

from doctor.context import Context, FactUnavailable, fact
from doctor.logscan import (
    DEFAULT_MAX_BYTES,
    Event,
    Tail,
    classify_gunicorn,
    classify_kernel,
    classify_nginx,
    correlate,
    parse_since,
    parse_time,
    read_boot_time,
    read_command,
    read_tail,
)

NGINX_DEFAULT_ERROR_LOG = "/var/log/nginx/error.log"
# Debian's nginx is built with --prefix=/usr/share/nginx, and nginx takes a
# relative error_log path relative to its prefix.
NGINX_PREFIX = "/usr/share/nginx"
KERNEL_LOG_FILES = ("/var/log/kern.log", "/var/log/messages")


@dataclass
class LogEvidence:
    """The tails read from one kind of log and the events found in them.

    ``origin`` names the source of the log's location, such as
    ``errorlog setting (/srv/app/gunicorn.conf.py:4)``.
    """

    tails: list[Tail]
    events: list[Event]
    origin: str

    @property
    def errors(self) -> list[str]:
        return [tail.error for tail in self.tails if tail.error]


def log_window(ctx: Context) -> tuple[datetime | None, int]:
    """Return the start of the time window and the byte limit from the options."""
    since = getattr(ctx.options, "since", None)
    if isinstance(since, timedelta):
        since = datetime.now().astimezone() - since
    elif isinstance(since, str):
        try:
            since = parse_since(since)
        except ValueError as exc:
            raise FactUnavailable(f"--since: {exc}") from None
    elif isinstance(since, datetime) and since.tzinfo is None:
        since = since.astimezone()
    max_bytes = getattr(ctx.options, "log_bytes", None)
    if max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise FactUnavailable(
            f"invalid log byte limit {max_bytes!r}: give a positive number of bytes"
        )
    return since, max_bytes


def read_deployment_log(ctx: Context, path: str, *, parse=parse_time) -> Tail:
    """Read the end of a log named by a deployment path, under ``--root`` if given."""
    since, max_bytes = log_window(ctx)
    if not ctx.fs.is_live:
        # Absolute symlink targets inside the tree point into the tree.
        resolved, problem = ctx.fs.resolve(path)
        if problem:
            return Tail([], False, f"{path} cannot be read: {problem}", path)
        path = resolved
    return read_tail(
        ctx.fs.host(path), max_bytes=max_bytes, since=since, parse_time=parse
    )


# --- gunicorn --------------------------------------------------------------


@fact("gunicorn_log")
def gunicorn_log(ctx: Context) -> LogEvidence:
    """Read gunicorn's error log: the errorlog file, or the unit's journal for ``-``."""
    settings = ctx.fact("settings")
    if "errorlog" in settings.non_literal:
        raise FactUnavailable(
            f"errorlog is set by an expression, {settings.non_literal['errorlog']},"
            " which static reading cannot evaluate; run without --static"
        )
    if settings.error and settings.source("errorlog").kind == "default":
        raise FactUnavailable(
            "the configuration did not load, so where gunicorn logs is unknown"
        )
    errorlog = settings.get("errorlog") or "-"
    if errorlog == "-":
        return _journal_log(ctx)
    path = str(errorlog)
    if not path.startswith("/"):
        # gunicorn opens a relative errorlog in its working directory.
        path = posixpath.join(ctx.target.chdir.value, path)
    tail = read_deployment_log(ctx, path)
    origin = f"errorlog setting ({settings.source('errorlog')})"
    return LogEvidence([tail], classify_gunicorn(tail.lines), origin)


def _journal_log(ctx: Context) -> LogEvidence:
    unit = ctx.target.unit
    if unit is None:
        raise FactUnavailable(
            "gunicorn writes its error log to stderr (errorlog '-') and no systemd"
            " unit is known, so there is no log to read. Pass --unit, or set"
            " errorlog to a file"
        )
    name = posixpath.basename(unit.value)
    since, max_bytes = log_window(ctx)
    tail = read_command(
        _journal_argv(ctx, name, since),
        max_bytes=max_bytes,
        since=since,
        newest_first=True,
        label=f"journalctl --unit {name}",
    )
    origin = f"the journal of {name} (errorlog '-' sends the log to stderr)"
    return LogEvidence([tail], classify_gunicorn(tail.lines), origin)


def _journal_argv(ctx: Context, unit_name: str, since: datetime | None) -> list[str]:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise FactUnavailable(
            "gunicorn writes its error log to stderr (errorlog '-'), which systemd"
            " sends to the journal, but journalctl is not installed here"
        )
    # Newest first, so that the byte limit keeps the latest entries.
    argv = [journalctl, "--unit", unit_name, "--output", "short-iso", "--reverse"]
    argv.append("--no-pager")
    if not ctx.fs.is_live:
        journal = ctx.fs.host("/var/log/journal")
        if not journal.is_dir():
            raise FactUnavailable(
                "gunicorn writes its error log to stderr (errorlog '-'), which"
                " systemd sends to the journal, but the --root tree has no"
                " /var/log/journal"
            )
        argv += ["--directory", str(journal)]
    if since is not None:
        argv += ["--since", since.astimezone().strftime("%Y-%m-%d %H:%M:%S")]
    return argv


# --- nginx -----------------------------------------------------------------


@fact("nginx_log")
def nginx_log(ctx: Context) -> LogEvidence:
    """Read every ``error_log`` of nginx's configuration, or nginx's default one."""
    try:
        config = ctx.fact("nginx")
    except FactUnavailable as exc:
        if not ctx.fs.host(NGINX_DEFAULT_ERROR_LOG).exists():
            raise FactUnavailable(
                f"{exc.reason}. {NGINX_DEFAULT_ERROR_LOG} does not exist either"
            ) from None
        config = None
    tails = []
    seen = set()
    origins = []
    for path, origin in _error_log_paths(config):
        if path in seen:
            continue
        seen.add(path)
        origins.append(origin)
        if path.startswith(("syslog:", "memory:")) or path == "stderr":
            message = f"error_log {path} ({origin}) is not a file, so it is not read"
            tails.append(Tail([], False, message, path))
            continue
        tails.append(read_deployment_log(ctx, path))
    events = [event for tail in tails for event in classify_nginx(tail.lines)]
    if len(tails) > 1:
        events.sort(key=_time_key)
    return LogEvidence(tails, events, "; ".join(origins))


def _error_log_paths(config) -> list[tuple[str, str]]:
    if config is None or not config.error_logs:
        return [(NGINX_DEFAULT_ERROR_LOG, "nginx's default error log")]
    paths = []
    for directive in config.error_logs:
        path = directive.args[0]
        if not path.startswith("/") and ":" not in path and path != "stderr":
            # NOTE: this is Debian's build prefix, and other builds may differ.
            path = posixpath.join(NGINX_PREFIX, path)
        paths.append((path, f"error_log at {directive.location}"))
    return paths


def _time_key(event: Event) -> tuple[bool, float]:
    # Events without a time stamp go last, in their log order.
    if event.time is None:
        return True, 0.0
    return False, event.time.timestamp()


# --- kernel ----------------------------------------------------------------


@fact("kernel_log")
def kernel_log(ctx: Context) -> LogEvidence:
    """Read the kernel's messages: ``dmesg -T`` on the live host, else kern.log."""
    since, max_bytes = log_window(ctx)
    reasons = []
    if ctx.fs.is_live:
        dmesg = shutil.which("dmesg")
        if dmesg is None:
            reasons.append("dmesg is not installed")
        else:
            tail = read_command(
                [dmesg, "-T"], max_bytes=max_bytes, since=since, label="dmesg -T"
            )
            if tail.error is None:
                return LogEvidence([tail], classify_kernel(tail.lines), "dmesg -T")
            reasons.append(tail.error)
    else:
        reasons.append("dmesg shows this machine's kernel, not the --root tree's")
    boot_time = read_boot_time(ctx.fs.host("/proc/stat"))
    parse = functools.partial(parse_time, boot_time=boot_time)
    for path in KERNEL_LOG_FILES:
        tail = read_deployment_log(ctx, path, parse=parse)
        if tail.error is None or tail.lines:
            events = classify_kernel(tail.lines, boot_time=boot_time)
            return LogEvidence([tail], events, path)
        reasons.append(tail.error)
    raise FactUnavailable("the kernel log cannot be read: " + "; ".join(reasons))


def worker_kills(ctx: Context) -> list[Event]:
    """Return gunicorn's events with each SIGKILL explained by the kernel log.

    Raises FactUnavailable when gunicorn's log is unavailable. An unavailable
    kernel log leaves the SIGKILLs unexplained, and their notes give the reason.
    """
    events = ctx.fact("gunicorn_log").events
    try:
        kernel = ctx.fact("kernel_log").events
    except FactUnavailable:
        kernel = None
    return correlate(events, kernel)
