"""Read the end of a log within a window, and classify the lines behind a 502.

The message texts matched here are those of gunicorn 27.0.1 (default
error-log format), nginx 1.22.1 and the Linux kernel's OOM killer. Matching
searches each line for a known message rather than parsing a fixed layout, so
journal and syslog prefixes are accepted. A line that matches no known text
is skipped, which keeps custom log formats from breaking anything.

This module imports only the standard library and does not use a Context.
The facts in ``doctor.facts.logevents`` decide which logs to read.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from doctor.timespec import parse_since  # noqa: F401 - part of this module's API

DEFAULT_MAX_BYTES = 4 << 20
BLOCK_SIZE = 64 << 10
COMMAND_TIMEOUT = 15.0

# ---------------------------------------------------------------------------
# Time stamps
# ---------------------------------------------------------------------------

_MONTHS = {
    name: number
    for number, name in enumerate(
        [
            "Jan",
            "Feb",
            "Mar",
            "Apr",
            "May",
            "Jun",
            "Jul",
            "Aug",
            "Sep",
            "Oct",
            "Nov",
            "Dec",
        ],
        start=1,
    )
}
# gunicorn: [2026-12-04 15:26:32 +0000]
_GUNICORN_TIME = re.compile(
    r"\[(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\]"
)
# dmesg -T: [Fri Dec  4 15:26:32 2026]
_DMESG_TIME = re.compile(
    r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) +(\d{1,2})"
    r" (\d\d):(\d\d):(\d\d) (\d{4})\]"
)
# raw dmesg: [12345.678901], seconds since boot
_MONOTONIC_TIME = re.compile(r"\[ *(\d+\.\d+)\]")
# nginx: 2026/12/04 15:26:23, local time
_NGINX_TIME = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\b")
# journalctl -o short-iso, rsyslog RFC 3339: 2026-12-04T15:26:32+0000
_ISO_TIME = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?(?=\s|$)"
)
# BSD syslog: Dec  4 15:26:32, local time without a year
_SYSLOG_TIME = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)\b")


def parse_time(line: str, *, boot_time: float | None = None) -> datetime | None:
    """Parse the time stamp at the start of a log line into an aware datetime.

    Recognises gunicorn's ``[2026-12-04 15:26:32 +0000]``, nginx's
    ``2026/12/04 15:26:23``, ISO 8601 (``journalctl -o short-iso``),
    ``dmesg -T``'s ``[Fri Dec  4 15:26:32 2026]``, syslog's
    ``Dec  4 15:26:32`` and raw dmesg's ``[12345.678901]`` seconds since boot,
    which needs ``boot_time`` (``btime`` of /proc/stat). Times without a zone
    are taken as this machine's local time. Returns None for anything else.
    """
    # NOTE: a log copied from a host in another time zone (a --root tree) has
    # its zone-less times (nginx, syslog, dmesg -T) shifted by the difference.
    if not line:
        return None
    try:
        if line[0] == "[":
            return _parse_bracketed(line, boot_time)
        if line[0].isdigit():
            return _parse_numeric(line)
        match = _SYSLOG_TIME.match(line)
        if match and match[1] in _MONTHS:
            return _syslog_time(match)
    except (ValueError, OverflowError, OSError):
        # Digits that form no real date, such as month 13, 30 February or a
        # boot offset beyond the years datetime supports.
        return None
    return None


def _parse_bracketed(line: str, boot_time: float | None) -> datetime | None:
    match = _GUNICORN_TIME.match(line)
    if match:
        year, month, day, hour, minute, second = (int(v) for v in match.groups()[:6])
        offset = timedelta(hours=int(match[8]), minutes=int(match[9]))
        zone = timezone(offset if match[7] == "+" else -offset)
        return datetime(year, month, day, hour, minute, second, tzinfo=zone)
    match = _DMESG_TIME.match(line)
    if match and match[1] in _MONTHS:
        return datetime(
            int(match[6]),
            _MONTHS[match[1]],
            int(match[2]),
            int(match[3]),
            int(match[4]),
            int(match[5]),
        ).astimezone()
    match = _MONOTONIC_TIME.match(line)
    if match and boot_time is not None:
        return datetime.fromtimestamp(boot_time + float(match[1])).astimezone()
    return None


def _parse_numeric(line: str) -> datetime | None:
    match = _NGINX_TIME.match(line)
    if match:
        return datetime(*(int(v) for v in match.groups())).astimezone()
    match = _ISO_TIME.match(line)
    if match:
        parsed = datetime.fromisoformat(match[0])
        return parsed if parsed.tzinfo else parsed.astimezone()
    return None


def _syslog_time(match: re.Match) -> datetime:
    now = datetime.now().astimezone()
    fields = (
        _MONTHS[match[1]],
        int(match[2]),
        int(match[3]),
        int(match[4]),
        int(match[5]),
    )
    stamp = datetime(now.year, *fields).astimezone()
    # Syslog omits the year, so a time more than a day ahead is from last year.
    if stamp > now + timedelta(days=1):
        stamp = datetime(now.year - 1, *fields).astimezone()
    return stamp


def read_boot_time(stat_path: Path = Path("/proc/stat")) -> float | None:
    """Return the boot time in seconds since the epoch from ``btime`` of /proc/stat."""
    try:
        text = stat_path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "btime" and value.strip().isdigit():
            return float(value.strip())
    return None


# ---------------------------------------------------------------------------
# Reading the end of a log
# ---------------------------------------------------------------------------

TimeParser = Callable[[str], "datetime | None"]


@dataclass
class Tail:
    """The last lines of a log, oldest first, and what limited or spoiled them.

    ``error`` is set when the log could not be read. It is also set for a log
    that contains NUL bytes, and then ``binary`` is True, the NUL bytes are
    removed and ``lines`` is still filled. ``truncated`` means that the byte
    limit ended the read before the start of the file or of the time window.
    """

    lines: list[str]
    truncated: bool
    error: str | None
    path: str
    binary: bool = False
    bytes_read: int = 0


def _open(path: Path) -> BinaryIO:
    # O_NONBLOCK keeps a FIFO at the log path from blocking the open; the
    # caller rejects anything that is not a regular file before reading.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.fdopen(fd, "rb", buffering=0)
    except OSError:
        os.close(fd)
        raise


def read_tail(
    path: Path | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    since: datetime | None = None,
    parse_time: TimeParser = parse_time,
) -> Tail:
    """Read a log from its end, at most ``max_bytes``, back to ``since``.

    The file is read backwards in blocks, so the cost depends on
    ``max_bytes`` and the window, never on the file's size. A partial first
    line is dropped. With ``since``, reading stops at the first block that
    holds a line older than ``since``, and lines without a time stamp
    (tracebacks) are kept only when they follow a kept line. ``parse_time``
    must return aware datetimes or None.

    Never raises for a bad file. A missing, unreadable or non-regular file
    gives a Tail with ``error`` set.
    """
    path = Path(path)
    if max_bytes <= 0:
        return Tail(
            [], False, f"invalid byte limit {max_bytes}: use 1 or more", str(path)
        )
    try:
        handle = _open(path)
    except OSError as exc:
        return Tail([], False, _open_error(path, exc), str(path))
    except ValueError:
        # os.open rejects a path that contains a NUL character.
        return Tail([], False, f"invalid log path {str(path)!r}", str(path))
    with handle:
        try:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return Tail([], False, _not_regular(path, info.st_mode), str(path))
            return _read_backwards(
                handle, info.st_size, path, max_bytes, since, parse_time
            )
        except OSError as exc:
            return Tail([], False, f"{path} cannot be read: {exc.strerror}", str(path))


def _open_error(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        try:
            return f"{path} is a dangling symlink to {os.readlink(path)}"
        except OSError:
            return f"{path} does not exist"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a directory, not a log file"
    if isinstance(exc, PermissionError):
        return f"{path} cannot be read: permission denied{_owner_hint(path)}"
    if exc.errno == errno.ELOOP:
        return f"{path} cannot be read: symlink loop"
    return f"{path} cannot be read: {exc.strerror}"


def _owner_hint(path: Path) -> str:
    try:
        info = path.stat()
    except OSError:
        return ". Run the doctor as root, or as a user who can reach the file"
    mode = stat.filemode(info.st_mode)
    return (
        f" (mode {mode}, owner uid {info.st_uid}, group gid {info.st_gid})."
        " Run the doctor as root or as a member of the file's group"
    )


def _not_regular(path: Path, mode: int) -> str:
    if stat.S_ISDIR(mode):
        return f"{path} is a directory, not a log file"
    return f"{path} is not a regular file (mode {stat.filemode(mode)})"


def _read_backwards(
    handle: BinaryIO,
    size: int,
    path: Path,
    max_bytes: int,
    since: datetime | None,
    parse_time: TimeParser,
) -> Tail:
    since = _aware(since)
    window = _read_blocks(handle, size, max_bytes, since, parse_time)
    lines, nul_bytes = _decode(window.lines)
    if since is not None:
        lines = _within(lines, since, parse_time)

    error = None
    if window.shrank:
        error = f"{path} shrank while it was read (log rotation?); read it again"
    elif nul_bytes:
        error = (
            f"{path} contains {nul_bytes} NUL bytes in its last {window.bytes_read}"
            " bytes, so it is binary or a crash left it partly unwritten. The NUL"
            " bytes were removed from the lines"
        )
    return Tail(
        lines, window.truncated, error, str(path), bool(nul_bytes), window.bytes_read
    )


@dataclass
class _Window:
    lines: list[bytes]
    bytes_read: int
    truncated: bool
    shrank: bool


def _read_blocks(
    handle: BinaryIO,
    size: int,
    max_bytes: int,
    since: datetime | None,
    parse_time: TimeParser,
) -> _Window:
    """Read blocks from the end until the file's start, ``max_bytes`` or ``since``."""
    position = size
    bytes_read = 0
    # The line that starts before the oldest byte read so far is kept in
    # pieces, newest piece first. It is complete only at the file's start.
    partial: list[bytes] = []
    blocks: list[list[bytes]] = []  # the complete lines of each block, newest first
    reached_since = shrank = False
    while position > 0 and bytes_read < max_bytes and not reached_since:
        length = min(BLOCK_SIZE, position, max_bytes - bytes_read)
        position -= length
        handle.seek(position)
        data = _read_exactly(handle, length)
        bytes_read += len(data)
        if len(data) < length:
            # The file shrank while being read, as copytruncate rotation does.
            shrank = True
            break

        pieces = data.split(b"\n")
        if len(pieces) == 1:
            partial.append(data)
            continue
        pieces[-1] += b"".join(reversed(partial))
        partial = [pieces[0]]
        block = pieces[1:]
        blocks.append(block)
        if since is not None:
            reached_since = _holds_older_line(block, since, parse_time)

    if position == 0 and not reached_since and not shrank:
        blocks.append([b"".join(reversed(partial))])  # the file's first line
    lines = [line for block in reversed(blocks) for line in block]
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the file
    truncated = (position > 0 or shrank) and not reached_since
    return _Window(lines, bytes_read, truncated, shrank)


def _read_exactly(handle: BinaryIO, length: int) -> bytes:
    chunks = []
    remaining = length
    while remaining > 0:
        chunk = handle.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _holds_older_line(
    block: list[bytes], since: datetime, parse_time: TimeParser
) -> bool:
    for raw in block:
        stamp = parse_time(raw.decode("utf-8", errors="replace"))
        if stamp is not None and stamp < since:
            return True
    return False


def _decode(raw_lines: list[bytes]) -> tuple[list[str], int]:
    lines = []
    nul_bytes = 0
    for raw in raw_lines:
        if b"\0" in raw:
            nul_bytes += raw.count(b"\0")
            raw = raw.replace(b"\0", b"")
            if not raw.strip():
                continue
        lines.append(raw.decode("utf-8", errors="replace").rstrip("\r"))
    return lines, nul_bytes


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone()


def _within(lines: list[str], since: datetime, parse_time: TimeParser) -> list[str]:
    """Keep the lines at or after ``since`` and the untimed lines that follow them."""
    stamps = [parse_time(line) for line in lines]
    if all(stamp is None for stamp in stamps):
        # A format without parseable times: the window cannot be applied.
        return lines
    kept = []
    keep = False
    for line, stamp in zip(lines, stamps, strict=True):
        if stamp is not None:
            keep = stamp >= since
        if keep:
            kept.append(line)
    return kept


def read_command(
    argv: Sequence[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    since: datetime | None = None,
    parse_time: TimeParser = parse_time,
    newest_first: bool = False,
    timeout: float = COMMAND_TIMEOUT,
    label: str | None = None,
) -> Tail:
    """Run a command that prints a log and keep the last ``max_bytes`` it prints.

    With ``newest_first`` (``journalctl --reverse``) the command is killed
    once ``max_bytes`` were read, and the lines are put back in time order.
    Otherwise the whole output is read and only its end is kept. A command
    still running after ``timeout`` seconds is killed. Never raises: a
    missing program, a non-zero exit or a message on stderr sets ``error``.
    """
    label = label or " ".join(argv)
    if max_bytes <= 0:
        return Tail([], False, f"invalid byte limit {max_bytes}: use 1 or more", label)
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        return Tail([], False, f"{label} cannot run: {exc.strerror}", label)
    except ValueError:
        return Tail([], False, f"{label} cannot run: an argument contains NUL", label)
    with process:
        output = _collect_output(process, max_bytes, newest_first, timeout)
    pieces = b"".join(output.chunks).split(b"\n")
    if newest_first:
        if output.truncated:
            pieces.pop()  # a line cut by the byte limit
        pieces.reverse()
    elif output.truncated:
        pieces = pieces[1:]  # a line cut by the byte limit
    lines, nul_bytes = _decode([piece for piece in pieces if piece])
    lines = [line for line in lines if not _is_journal_marker(line)]
    if since is not None:
        lines = _within(lines, _aware(since), parse_time)
    error = _command_error(label, process.returncode, output, timeout)
    if error is None and nul_bytes:
        error = f"{label} printed {nul_bytes} NUL bytes, which were removed"
    return Tail(
        lines, output.truncated, error, label, bool(nul_bytes), output.bytes_read
    )


@dataclass
class _Output:
    chunks: list[bytes]
    bytes_read: int
    truncated: bool
    stopped: bool  # killed here: at the byte limit or the timeout
    timed_out: bool
    stderr: bytes


MAX_STDERR = 4096


def _collect_output(
    process: subprocess.Popen, max_bytes: int, newest_first: bool, timeout: float
) -> _Output:
    deadline = time.monotonic() + timeout
    kept: deque[bytes] = deque()
    kept_bytes = 0
    bytes_read = 0
    stderr = bytearray()
    truncated = timed_out = False
    open_streams = {
        process.stdout.fileno(): "stdout",
        process.stderr.fileno(): "stderr",
    }
    while open_streams and not (newest_first and kept_bytes >= max_bytes):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(list(open_streams), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, BLOCK_SIZE)
            if not chunk:
                del open_streams[fd]
            elif open_streams[fd] == "stderr":
                stderr += chunk[: MAX_STDERR - len(stderr)]
            else:
                bytes_read += len(chunk)
                kept.append(chunk)
                kept_bytes += len(chunk)
        # Keep only the chunks needed for the last max_bytes.
        while not newest_first and kept and kept_bytes - len(kept[0]) >= max_bytes:
            kept_bytes -= len(kept.popleft())
            truncated = True

    if kept_bytes > max_bytes:
        excess = kept_bytes - max_bytes
        if newest_first:
            last = kept.pop()
            kept.append(last[: len(last) - excess])
        else:
            kept.appendleft(kept.popleft()[excess:])
        truncated = True
    if newest_first and open_streams:
        truncated = True  # stopped before the end of the output
    stopped, lingered = _end_process(process, bool(open_streams), deadline)
    return _Output(
        list(kept), bytes_read, truncated, stopped, timed_out or lingered, bytes(stderr)
    )


def _end_process(
    process: subprocess.Popen, still_writing: bool, deadline: float
) -> tuple[bool, bool]:
    """Wait for the command, or kill it. Return whether it was killed and timed out."""
    if still_writing:
        process.kill()
        process.wait()
        return True, False
    try:
        process.wait(max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        # Both pipes are closed but the command lingers.
        process.kill()
        process.wait()
        return True, True
    return False, False


def _is_journal_marker(line: str) -> bool:
    # journalctl prints "-- No entries --" and "-- Boot 1a2b... --" lines.
    return line.startswith("-- ") and line.endswith(" --")


def _command_error(
    label: str, returncode: int, output: _Output, timeout: float
) -> str | None:
    message = " ".join(output.stderr.decode("utf-8", errors="replace").split())
    if output.timed_out:
        return (
            f"{label} did not finish within {timeout:g} seconds; only the lines"
            " printed until then were read"
        )
    if returncode != 0 and not output.stopped:
        return f"{label} failed with exit code {returncode}: {message or 'no message'}"
    if message:
        return f"{label}: {message}"
    return None


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One classified log line.

    ``pid`` is the process that logged the line (the nginx worker, the
    gunicorn master or worker) or, for ``kernel.oom_kill``, the killed
    process. ``worker_pid`` is the gunicorn worker a master's line is about.
    ``upstream`` is the address nginx tried, as ``127.0.0.1:8000`` or
    ``unix:/run/app.sock``. ``status`` is the HTTP status the failure gave the
    client, when it gave one. ``extra`` contains the other values of the message
    (``version``, ``address``, ``exit_code``, ``errno``, ``phase``, ...).
    """

    source: str
    signature: str
    time: datetime | None
    pid: int | None
    worker_pid: int | None
    upstream: str | None
    status: int | None
    line: str
    level: str | None = None
    client: str | None = None
    server: str | None = None
    request: str | None = None
    host: str | None = None
    note: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


# --- nginx -----------------------------------------------------------------

_NGINX_PREFIX = re.compile(
    r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(?P<level>[a-z]+)\] (?P<pid>\d+)#\d+: "
)
_NGINX_CONNECT_FAILED = re.compile(
    r"connect\(\) (?:to (?P<peer>\S+) )?failed \((?P<errno>\d+): [^)]*\)"
    r" while connecting to upstream"
)
_NGINX_TIMED_OUT = re.compile(
    r"upstream timed out \(110: [^)]*\) while (?P<phase>connecting to upstream"
    r"|reading response header from upstream|reading upstream"
    r"|sending request to upstream)"
)
_NGINX_PREMATURE = re.compile(
    r"upstream prematurely closed connection while (?P<phase>reading response"
    r" header from upstream|reading upstream)"
)
_NGINX_RESET = re.compile(
    r"\b(?:recv|readv|read|send|writev|write|sendfile)\(\) failed"
    r" \((?P<errno>104|32): [^)]*\) while (?P<phase>[a-z ]*upstream)"
)
_NGINX_FIXED = {
    "no live upstreams while connecting to upstream": "nginx.no_live_upstreams",
    "upstream sent too big header while reading response header from upstream": (
        "nginx.too_big_header"
    ),
}
_NGINX_INVALID_HEADER = re.compile(r"upstream sent invalid header\b")
_NGINX_BODY = re.compile(
    r"client intended to send too large body: (?P<bytes>\d+) bytes"
)
_NGINX_CONTEXT = re.compile(
    r", client: (?P<client>[^,]*)"
    r"(?:, server: (?P<server>[^,]*))?"
    r'(?:, request: "(?P<request>.*?)")?'
    r'(?:, subrequest: "[^"]*")?'
    r'(?:, upstream: "(?P<upstream>[^"]*)")?'
    r'(?:, host: "(?P<host>[^"]*)")?'
)
_CONNECT_ERRNO = {
    ("111", False): "nginx.refused",
    ("111", True): "nginx.unix_refused",
    ("2", True): "nginx.unix_missing",
    ("13", True): "nginx.unix_permission",
    ("13", False): "nginx.tcp_permission",
}
# The status the client received; None when the response had already started.
NGINX_STATUS = {
    "nginx.refused": 502,
    "nginx.unix_missing": 502,
    "nginx.unix_permission": 502,
    "nginx.tcp_permission": 502,
    "nginx.unix_refused": 502,
    "nginx.connect_failed": 502,
    "nginx.connect_timeout": 504,
    "nginx.read_timeout": 504,
    "nginx.send_timeout": 504,
    "nginx.premature_close": 502,
    "nginx.reset": 502,
    "nginx.no_live_upstreams": 502,
    "nginx.too_big_header": 502,
    "nginx.invalid_header": 502,
    "nginx.body_too_large": 413,
}
_MID_BODY_PHASE = "reading upstream"


def classify_nginx(lines: Iterable[str]) -> list[Event]:
    """Classify nginx error-log lines about upstream failures and 413s.

    Signatures: ``nginx.refused``, ``nginx.unix_missing``,
    ``nginx.unix_permission``, ``nginx.tcp_permission`` (errno 13 on TCP,
    usually SELinux), ``nginx.unix_refused``, ``nginx.connect_failed`` (any
    other errno), ``nginx.connect_timeout``, ``nginx.read_timeout``,
    ``nginx.send_timeout``, ``nginx.premature_close``, ``nginx.reset``,
    ``nginx.no_live_upstreams``, ``nginx.too_big_header``,
    ``nginx.invalid_header`` and ``nginx.body_too_large``.
    """
    events = []
    for line in lines:
        found = _nginx_signature(line)
        if found is None:
            continue
        signature, message_end, extra = found
        events.append(_nginx_event(line, signature, message_end, extra))
    return events


def _nginx_signature(line: str) -> tuple[str, int, dict[str, str]] | None:
    """Return the signature, the end of the message and its values, if any."""
    if "upstream" not in line and "too large body" not in line:
        return None

    match = _NGINX_CONNECT_FAILED.search(line)
    if match:
        is_unix = (match["peer"] or "").startswith("unix:") or "://unix:" in line
        number = match["errno"]
        signature = _CONNECT_ERRNO.get((number, is_unix), "nginx.connect_failed")
        return signature, match.end(), {"errno": number}

    match = _NGINX_TIMED_OUT.search(line)
    if match:
        phase = match["phase"]
        signature = {
            "connecting to upstream": "nginx.connect_timeout",
            "sending request to upstream": "nginx.send_timeout",
        }.get(phase, "nginx.read_timeout")
        return signature, match.end(), {"phase": phase}

    match = _NGINX_PREMATURE.search(line)
    if match:
        return "nginx.premature_close", match.end(), {"phase": match["phase"]}

    match = _NGINX_RESET.search(line)
    if match:
        extra = {"errno": match["errno"], "phase": match["phase"]}
        return "nginx.reset", match.end(), extra

    for text, signature in _NGINX_FIXED.items():
        index = line.find(text)
        if index >= 0:
            return signature, index + len(text), {}

    match = _NGINX_INVALID_HEADER.search(line)
    if match:
        return "nginx.invalid_header", match.end(), {}

    match = _NGINX_BODY.search(line)
    if match:
        return "nginx.body_too_large", match.end(), {"bytes": match["bytes"]}
    return None


def _nginx_event(line: str, signature: str, message_end: int, extra: dict) -> Event:
    prefix = _NGINX_PREFIX.search(line)
    context = _NGINX_CONTEXT.search(line, message_end)
    fields = context.groupdict() if context else {}
    upstream = _upstream_address(fields.get("upstream"))
    if upstream is None:
        peer = _NGINX_CONNECT_FAILED.search(line)
        upstream = peer["peer"] if peer and peer["peer"] else None
    status = NGINX_STATUS[signature]
    if extra.get("phase") == _MID_BODY_PHASE:
        status = None
    return Event(
        source="nginx",
        signature=signature,
        time=parse_time(line),
        pid=int(prefix["pid"]) if prefix else None,
        worker_pid=None,
        upstream=upstream,
        status=status,
        line=line,
        level=prefix["level"] if prefix else None,
        client=fields.get("client"),
        server=fields.get("server") or None,
        request=fields.get("request"),
        host=fields.get("host"),
        extra=extra,
    )


def _upstream_address(url: str | None) -> str | None:
    """Reduce nginx's ``upstream: "http://127.0.0.1:8000/path"`` to the address."""
    if not url:
        return None
    rest = url.split("://", 1)[-1]
    if rest.startswith("unix:"):
        # nginx writes a unix upstream as http://unix:/run/app.sock:/path.
        return "unix:" + rest[len("unix:") :].split(":", 1)[0]
    return rest.split("/", 1)[0]


# --- gunicorn --------------------------------------------------------------

_GUNICORN_PREFIX = re.compile(r"\[(?P<pid>\d+)\] \[(?P<level>[A-Z]+)\] ")
# The "name[pid]: " tag of a journal or syslog line.
_SYSLOG_TAG = re.compile(r" [\w.@/-]+\[(?P<pid>\d+)\]: ")
_GUNICORN_PATTERNS = (
    (
        "gunicorn.worker_timeout",
        re.compile(r"(?<!DIRTY )WORKER TIMEOUT \(pid:(?P<worker>\d+)\)"),
    ),
    (
        "gunicorn.sigkill",
        re.compile(r"Worker \(pid:(?P<worker>\d+)\) was sent SIGKILL!"),
    ),
    (
        "gunicorn.worker_signal",
        re.compile(
            r"Worker \(pid:(?P<worker>\d+)\) was sent (?P<signal>SIG\w+|signal \d+)!"
        ),
    ),
    (
        "gunicorn.worker_exit",
        re.compile(
            r"Worker \(pid:(?P<worker>\d+)\) exited with code (?P<exit_code>\d+)"
        ),
    ),
    (
        "gunicorn.booting_worker",
        re.compile(r"Booting worker with pid: (?P<worker>\d+)"),
    ),
    ("gunicorn.exception_in_worker", re.compile(r"Exception in worker process")),
    ("gunicorn.worker_boot_failed", re.compile(r"Reason: Worker failed to boot\.")),
    ("gunicorn.app_load_failed", re.compile(r"Reason: App failed to load\.")),
    (
        "gunicorn.app_import_error",
        re.compile(
            # At the start of the message, so that the source line that raises
            # AppImportError in a traceback does not count.
            r"(?:^|: )(?P<message>Failed to (?:find attribute|find application"
            r"|parse \S+ as an attribute name).*)"
        ),
    ),
    ("gunicorn.connection_in_use", re.compile(r"Connection in use: (?P<address>.+)")),
    ("gunicorn.invalid_address", re.compile(r"Invalid address: (?P<address>.+)")),
    ("gunicorn.cannot_connect", re.compile(r"Can't connect to (?P<address>.+)")),
    (
        "gunicorn.already_running",
        re.compile(
            r"Already running on PID (?P<running_pid>\d+)"
            r" \(or pid file '(?P<pidfile>[^']*)' is stale\)"
        ),
    ),
    (
        "gunicorn.listening",
        re.compile(r"Listening at: (?P<addresses>.+?)(?: \((?P<master>\d+)\))?$"),
    ),
    ("gunicorn.starting", re.compile(r"Starting gunicorn (?P<version>\S+)")),
    ("gunicorn.reload", re.compile(r"Hang up: Master")),
    (
        "gunicorn.error_handling_request",
        re.compile(r"Error handling request\b ?(?P<request>.*)"),
    ),
)
# A traceback longer than this is cut, which bounds the scan in a log whose
# lines carry no gunicorn prefix at all.
MAX_TRACEBACK_LINES = 200
# Signatures logged by the worker itself, whose own pid is the worker's.
_LOGGED_BY_WORKER = {"gunicorn.exception_in_worker", "gunicorn.error_handling_request"}


def classify_gunicorn(lines: Sequence[str]) -> list[Event]:
    """Classify gunicorn error-log lines, plain or behind a journal prefix.

    Signatures: ``gunicorn.worker_timeout``, ``gunicorn.sigkill``,
    ``gunicorn.worker_signal`` (other signals), ``gunicorn.worker_exit``,
    ``gunicorn.booting_worker``, ``gunicorn.exception_in_worker``,
    ``gunicorn.worker_boot_failed``, ``gunicorn.app_load_failed``,
    ``gunicorn.app_import_error``, ``gunicorn.connection_in_use``,
    ``gunicorn.invalid_address``, ``gunicorn.cannot_connect``,
    ``gunicorn.already_running``, ``gunicorn.listening``,
    ``gunicorn.starting``, ``gunicorn.reload`` and
    ``gunicorn.error_handling_request``. For the two raised in a worker,
    ``extra["exception"]`` is the last line of the traceback that follows.
    """
    events = []
    for index, line in enumerate(lines):
        for signature, pattern in _GUNICORN_PATTERNS:
            match = pattern.search(line)
            if match:
                events.append(_gunicorn_event(lines, index, signature, match))
                break
    return events


def _gunicorn_event(lines: Sequence[str], index: int, signature: str, match) -> Event:
    line = lines[index]
    prefix = _GUNICORN_PREFIX.search(line)
    tag = _SYSLOG_TAG.search(line)
    pid = None
    if prefix:
        pid = int(prefix["pid"])
    elif tag:
        pid = int(tag["pid"])
    values = {k: v for k, v in match.groupdict().items() if v is not None}
    worker = values.pop("worker", None)
    master = values.pop("master", None)
    if master is not None:
        pid = int(master)
    worker_pid = int(worker) if worker else None

    if signature in _LOGGED_BY_WORKER:
        worker_pid = pid
        exception = _traceback_exception(lines, index)
        if exception:
            values["exception"] = exception

    return Event(
        source="gunicorn",
        signature=signature,
        time=parse_time(line),
        pid=pid,
        worker_pid=worker_pid,
        upstream=None,
        status=500 if signature == "gunicorn.error_handling_request" else None,
        line=line,
        level=prefix["level"] if prefix else None,
        extra=values,
    )


def _traceback_exception(lines: Sequence[str], index: int) -> str | None:
    """Return the last line of the traceback after ``lines[index]``, if one follows."""
    last = None
    for line in lines[index + 1 : index + 1 + MAX_TRACEBACK_LINES]:
        if _GUNICORN_PREFIX.search(line):
            break
        tag = _SYSLOG_TAG.search(line)
        text = line[tag.end() :] if tag else line
        if text.strip():
            last = text.strip()
    if last is None or last.startswith(("Traceback", "File ")):
        return None
    return last


# --- kernel ----------------------------------------------------------------

_OOM_KILLED = re.compile(r"\bKilled process (?P<pid>\d+) \((?P<name>[^)]*)\)")
_OOM_KILL = re.compile(r"\boom-kill:\S*?\bpid=(?P<pid>\d+)")
_OOM_TASK = re.compile(r"\btask=(?P<name>[^,\s]+)")
_OOM_MEMCG = re.compile(r"\btask_memcg=(?P<memcg>[^,\s]+)")


def classify_kernel(
    lines: Iterable[str], *, boot_time: float | None = None
) -> list[Event]:
    """Classify the OOM killer's kills as ``kernel.oom_kill`` events.

    Both ``Out of memory: Killed process N (name)`` and the
    ``oom-kill:...,pid=N,...`` summary line are recognised. The two lines one
    kill produces give one event. ``boot_time`` converts raw dmesg times.
    """
    events: list[Event] = []
    for line in lines:
        extra: dict[str, str] = {}
        match = _OOM_KILLED.search(line)
        if match:
            extra["process"] = match["name"]
        else:
            match = _OOM_KILL.search(line)
            if not match:
                continue
            task = _OOM_TASK.search(line)
            memcg = _OOM_MEMCG.search(line)
            if task:
                extra["process"] = task["name"]
            if memcg:
                extra["memcg"] = memcg["memcg"]
        pid = int(match["pid"])
        if events and events[-1].pid == pid:
            # The second line of the same kill adds its values to the event.
            events[-1].extra.update(extra)
            continue
        events.append(
            Event(
                source="kernel",
                signature="kernel.oom_kill",
                time=parse_time(line, boot_time=boot_time),
                pid=pid,
                worker_pid=None,
                upstream=None,
                status=None,
                line=line,
                extra=extra,
            )
        )
    return events


# ---------------------------------------------------------------------------
# Correlation and summaries
# ---------------------------------------------------------------------------

# Pids are reused, so a kernel line counts for a SIGKILL only within this
# distance in time. dmesg -T times drift after a suspend, hence the margin.
OOM_MATCH_WINDOW = timedelta(minutes=5)


def correlate(
    gunicorn_events: Sequence[Event], kernel_events: Sequence[Event] | None
) -> list[Event]:
    """Tell apart the causes of ``gunicorn.sigkill``: timeout, OOM killer or unknown.

    A SIGKILL of worker P becomes ``gunicorn.oom_kill`` when a
    ``kernel.oom_kill`` names P, else ``gunicorn.timeout_kill`` when
    ``WORKER TIMEOUT (pid:P)`` came before it (gunicorn's master killed the
    worker itself), else it stays ``gunicorn.sigkill``. ``kernel_events`` is
    None when the kernel log could not be read. Each result's ``note``
    explains the verdict. Other events are returned unchanged, in order.
    """
    # NOTE: a gunicorn in a container logs the pids of its pid namespace and
    # the kernel logs host pids, so an OOM kill there is not matched.
    ooms: dict[int, list[Event]] = {}
    for event in kernel_events or ():
        if event.signature == "kernel.oom_kill" and event.pid is not None:
            ooms.setdefault(event.pid, []).append(event)
    timeouts: dict[int, Event] = {}
    result = []
    for event in gunicorn_events:
        worker = event.worker_pid
        if event.signature == "gunicorn.worker_timeout" and worker is not None:
            timeouts[worker] = event
        elif event.signature == "gunicorn.booting_worker" and worker is not None:
            timeouts.pop(worker, None)  # the pid now names a new worker
        elif event.signature == "gunicorn.sigkill" and worker is not None:
            event = _explain_kill(
                event,
                ooms.get(worker, []),
                timeouts.pop(worker, None),
                kernel_events is not None,
            )
        result.append(event)
    return result


def _explain_kill(
    kill: Event, ooms: list[Event], timeout: Event | None, kernel_read: bool
) -> Event:
    worker = kill.worker_pid
    oom = next((o for o in ooms if _close_in_time(o.time, kill.time)), None)
    if oom is not None:
        after = (
            f" It had logged WORKER TIMEOUT first: {timeout.line}" if timeout else ""
        )
        return replace(
            kill,
            signature="gunicorn.oom_kill",
            note=f"the kernel's OOM killer killed worker {worker}: {oom.line}{after}",
        )
    if timeout is not None:
        return replace(
            kill,
            signature="gunicorn.timeout_kill",
            note=(
                f"gunicorn's master killed worker {worker} after WORKER TIMEOUT,"
                " because the worker was silent for longer than the timeout"
                " setting. This is a timeout, not out of memory"
            ),
        )
    if kernel_read:
        reason = (
            f"The kernel log does not name pid {worker}: its OOM messages may have"
            " left the ring buffer, or gunicorn runs in another pid namespace"
        )
    else:
        reason = "The kernel log was not readable, so which one is unknown"
    note = (
        f"worker {worker} was killed by SIGKILL, from the OOM killer or an"
        f" operator. {reason}"
    )
    return replace(kill, note=note)


def _close_in_time(first: datetime | None, second: datetime | None) -> bool:
    if first is None or second is None:
        return True
    return abs(first - second) <= OOM_MATCH_WINDOW


@dataclass
class Summary:
    """How often one signature occurred, when, and up to three of its lines."""

    signature: str
    count: int
    first: datetime | None
    last: datetime | None
    samples: list[str]


MAX_SAMPLES = 3


def summarize(events: Iterable[Event]) -> dict[str, Summary]:
    """Group events by signature, in order of first occurrence.

    The samples are the first line and the two latest, in log order.
    """
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.signature, []).append(event)
    summaries = {}
    for signature, group in grouped.items():
        stamps = [e.time for e in group if e.time is not None]
        if len(group) <= MAX_SAMPLES:
            chosen = group
        else:
            chosen = [group[0], *group[-(MAX_SAMPLES - 1) :]]
        summaries[signature] = Summary(
            signature=signature,
            count=len(group),
            first=min(stamps) if stamps else None,
            last=max(stamps) if stamps else None,
            samples=[e.line for e in chosen],
        )
    return summaries


# Without a worker count, boots this soon after a start or reload are taken
# as the initial spawn: gunicorn spawns all workers at once.
INITIAL_SPAWN = timedelta(seconds=10)


def booting_rate(
    events: Sequence[Event], window: timedelta, *, workers: int | None = None
) -> float:
    """Return worker respawns per minute in the ``window`` before the last event.

    Boots that belong to a start (``Starting gunicorn``) or a reload
    (``Hang up``) are not respawns: the first ``workers`` boots after each,
    or without ``workers`` the boots within ten seconds of it. Events
    without a time stamp are not counted.
    """
    if window <= timedelta(0):
        raise ValueError(f"invalid window {window}: it must be positive")
    stamps = [e.time for e in events if e.time is not None]
    if not stamps:
        return 0.0
    end = max(stamps)
    start = end - window
    respawns = 0
    started_at: datetime | None = None
    initial_left = 0
    for event in events:
        if event.signature in ("gunicorn.starting", "gunicorn.reload"):
            started_at = event.time
            initial_left = workers or 0
            continue
        if event.signature != "gunicorn.booting_worker" or event.time is None:
            continue
        if workers is not None and initial_left > 0:
            initial_left -= 1
            continue
        if workers is None and started_at and event.time - started_at <= INITIAL_SPAWN:
            continue
        if event.time >= start:
            respawns += 1
    return respawns / (window.total_seconds() / 60)
