"""gunicorn's access log and the request durations it records.

gunicorn writes one line per request, built by %-formatting
``access_log_format`` with a mapping of atoms (``Logger.atoms`` in
``gunicorn/glogging.py``, read in 20.0.0 and 27.0.1). Four atoms give the
request's duration: ``%(D)s`` in microseconds, ``%(M)s`` in milliseconds,
``%(L)s`` in decimal seconds and ``%(T)s`` in whole seconds. ``%(M)s``
exists since gunicorn 20.1.0, and older releases write ``-`` in its place.
The format is turned into a regular expression, so that the duration can
be read back from each line.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from doctor.context import Context, FactUnavailable, fact
from doctor.facts.logevents import log_window, read_deployment_log
from doctor.logscan import Tail, read_command
from doctor.logscan import parse_time as parse_log_time

DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
# Seconds per unit of each duration atom, in order of preference: the
# finest resolution first.
DURATION_ATOMS = {"D": 1e-6, "L": 1.0, "M": 1e-3, "T": 1.0}
# Lines that do not match the format, kept as examples.
MAX_UNMATCHED_SAMPLES = 3

# A literal "%%" or one %-conversion with a mapping key, as Python's
# %-formatting reads them.
_CONVERSION = re.compile(
    r"%%|%\((?P<key>[^)]*)\)(?P<spec>[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?"
    r"[diouxXeEfFgGcrsa])"
)
# Atoms whose value never contains a space, as gunicorn fills them in. They
# may be empty: REMOTE_ADDR is "" for a client on a unix socket.
_ATOM_PATTERNS = {
    "h": r"\S*",
    "l": r"\S*",
    "t": r"\[[^\]]*\]",
    "s": r"\S*",
    "b": r"\S*",
    "B": r"\S*",
    "m": r"\S*",
    "H": r"\S*",
    "p": r"\S*",
    "D": r"-?\d+",
    "M": r"-?\d+",
    "T": r"-?\d+",
    "L": r"-?\d+\.\d+",
}
# %(t)s: [04/Dec/2026:15:26:32 +0000]
_CLF_TIME = re.compile(
    r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\]"
)
# journalctl -o short-iso: 2026-12-04T15:26:32+0000 host gunicorn[1234]: ...
JOURNAL_PREFIX = re.compile(r"\S+ \S+ [^\s:]+(?:\[\d+\])?: ")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun")
_MONTH_NAMES += ("Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}


class AccessFormat(NamedTuple):
    """An ``access_log_format`` and the pattern that reads its duration back."""

    text: str
    pattern: re.Pattern
    atom: str

    @property
    def unit_seconds(self) -> float:
        return DURATION_ATOMS[self.atom]


def compile_access_format(text: str) -> AccessFormat:
    """Turn an ``access_log_format`` into a pattern with a ``duration`` group.

    Raises ValueError when the format contains no duration atom.
    """
    conversions = list(_CONVERSION.finditer(text))
    keys = [match["key"] for match in conversions if match["key"] is not None]
    atom = next((name for name in DURATION_ATOMS if name in keys), None)
    if atom is None:
        raise ValueError(
            f"access_log_format {text!r} records no request duration"
            " (none of %(D)s, %(L)s, %(M)s, %(T)s)"
        )
    parts = []
    position = 0
    captured = False
    for match in conversions:
        parts.append(_literal(text[position : match.start()]))
        position = match.end()
        key = match["key"]
        if key is None:
            parts.append("%")
            continue
        atom_pattern = _ATOM_PATTERNS.get(key, r".*?")
        if key == atom and not captured:
            parts.append(f"(?P<duration>{atom_pattern})")
            captured = True
        else:
            parts.append(f"(?:{atom_pattern})")
    parts.append(_literal(text[position:]))
    return AccessFormat(text, re.compile("".join(parts)), atom)


def _literal(text: str) -> str:
    return re.escape(text)


def suggested_format(text: str | None) -> str:
    """Return ``text`` (or gunicorn's default format) with ``%(D)s`` appended."""
    return f"{text or DEFAULT_FORMAT} %(D)s"


def access_time(line: str) -> datetime | None:
    """Parse the ``%(t)s`` time of an access-log line, else a leading log time."""
    match = _CLF_TIME.search(line)
    if match and match[2] in _MONTHS:
        try:
            offset = timedelta(hours=int(match[8]), minutes=int(match[9]))
            zone = timezone(offset if match[7] == "+" else -offset)
            return datetime(
                int(match[3]),
                _MONTHS[match[2]],
                int(match[1]),
                int(match[4]),
                int(match[5]),
                int(match[6]),
                tzinfo=zone,
            )
        except ValueError:
            return None
    return parse_log_time(line)


class TimedRequest(NamedTuple):
    """One access-log line and the duration it records, in seconds."""

    seconds: float
    line: str


@dataclass
class AccessLog:
    """The end of gunicorn's access log and the request durations read from it.

    ``origin`` names where the log's location came from, ``format_origin``
    where the format came from.
    """

    path: str
    origin: str
    format: AccessFormat
    format_origin: str
    tail: Tail
    requests: list[TimedRequest] = field(default_factory=list)
    unmatched: int = 0
    unmatched_samples: list[str] = field(default_factory=list)


def parse_durations(
    lines: list[str], access_format: AccessFormat, *, prefix: re.Pattern | None = None
) -> tuple[list[TimedRequest], int, list[str]]:
    """Read the duration of each line that matches the format.

    ``prefix`` is removed from the start of each line before matching, such
    as the journal's time, host and process. Returns the timed requests, the
    number of lines that do not match, and up to three of those lines.
    """
    requests = []
    unmatched = 0
    samples: list[str] = []
    for line in lines:
        message = line
        if prefix is not None:
            start = prefix.match(line)
            message = line[start.end() :] if start else line
        match = access_format.pattern.fullmatch(message)
        if match is None or match["duration"].startswith("-"):
            unmatched += 1
            if len(samples) < MAX_UNMATCHED_SAMPLES:
                samples.append(line)
            continue
        seconds = float(match["duration"]) * access_format.unit_seconds
        requests.append(TimedRequest(seconds, line))
    return requests, unmatched, samples


@fact("access_log")
def access_log(ctx: Context) -> AccessLog:
    """Read the end of gunicorn's access log and the durations it records."""
    settings = ctx.fact("settings")
    if settings.error:
        raise FactUnavailable("gunicorn did not finish loading the configuration")
    for name in ("accesslog", "access_log_format"):
        if name in settings.non_literal:
            raise FactUnavailable(
                f"{name} is set by an expression, {settings.non_literal[name]},"
                " which static reading cannot evaluate; run without --static"
            )
    text = settings.get("access_log_format") or DEFAULT_FORMAT
    accesslog = settings.get("accesslog")
    try:
        access_format = compile_access_format(text)
    except ValueError as exc:
        add = f"access_log_format = {suggested_format(text)!r}"
        if not accesslog:
            add = f"accesslog = '/var/log/gunicorn/access.log' and {add}"
        raise FactUnavailable(
            f"{exc}, so request times cannot be measured; add to the config: {add}"
        ) from None
    if not accesslog:
        raise FactUnavailable(
            "gunicorn writes no access log (accesslog is not set), so request"
            " times cannot be measured; add to the config: accesslog ="
            " '/var/log/gunicorn/access.log'"
        )
    format_origin = settings.describe("access_log_format")
    origin = f"accesslog setting ({settings.source('accesslog')})"
    prefix = None
    if accesslog == "-":
        tail, path = _journal_tail(ctx)
        origin = f"{path} (accesslog '-' writes to stdout)"
        prefix = JOURNAL_PREFIX
    else:
        path = str(accesslog)
        if not path.startswith("/"):
            path = posixpath.join(_working_directory(ctx, settings), path)
        tail = read_deployment_log(ctx, path, parse=access_time)
    if tail.error and not tail.lines:
        raise FactUnavailable(f"the access log cannot be read: {tail.error}")
    requests, unmatched, samples = parse_durations(
        tail.lines, access_format, prefix=prefix
    )
    return AccessLog(
        path, origin, access_format, format_origin, tail, requests, unmatched, samples
    )


def _working_directory(ctx: Context, settings) -> str:
    """Return the directory gunicorn takes a relative accesslog path from."""
    base = ctx.target.chdir.value if ctx.target.chdir else "/"
    value = settings.get("chdir")
    if settings.source("chdir").kind == "default" or not isinstance(value, str):
        # The probe's default is its own working directory and the static
        # estimate's default is meaningless: both stand for the deployment's.
        return base
    return posixpath.normpath(posixpath.join(base, value))


def _journal_tail(ctx: Context) -> tuple[Tail, str]:
    """Read the unit's journal, where systemd sends gunicorn's stdout."""
    unit = ctx.target.unit
    if unit is None:
        raise FactUnavailable(
            "gunicorn writes its access log to stdout (accesslog '-') and no"
            " systemd unit is known, so there is no log to read; pass --unit,"
            " or set accesslog to a file"
        )
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise FactUnavailable(
            "gunicorn writes its access log to stdout (accesslog '-'), which"
            " systemd sends to the journal, but journalctl is not installed here"
        )
    name = posixpath.basename(unit.value)
    since, max_bytes = log_window(ctx)
    argv = [journalctl, "--unit", name, "--output", "short-iso", "--reverse"]
    argv.append("--no-pager")
    if not ctx.fs.is_live:
        journal = ctx.fs.host("/var/log/journal")
        if not journal.is_dir():
            raise FactUnavailable(
                "gunicorn writes its access log to stdout (accesslog '-'), which"
                " systemd sends to the journal, but the --root tree has no"
                " /var/log/journal"
            )
        argv += ["--directory", str(journal)]
    if since is not None:
        argv += ["--since", since.astimezone().strftime("%Y-%m-%d %H:%M:%S")]
    label = f"journalctl --unit {name}"
    tail = read_command(
        argv,
        max_bytes=max_bytes,
        since=since,
        parse_time=access_time,
        newest_first=True,
        label=label,
    )
    return tail, f"the journal of {name}"
