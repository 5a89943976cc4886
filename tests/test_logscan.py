"""Log tails and the classification of the lines behind a 502.

The samples in tests/samples use the message texts of gunicorn 27.0.1,
nginx 1.22.1 and the Linux OOM killer. The tests at the end also produce
real gunicorn and nginx logs on loopback.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from doctor import logscan
from doctor.context import Context, FactUnavailable, Options
from doctor.facts.logevents import worker_kills
from doctor.logscan import (
    BLOCK_SIZE,
    Event,
    booting_rate,
    classify_gunicorn,
    classify_kernel,
    classify_nginx,
    correlate,
    parse_since,
    parse_time,
    read_command,
    read_tail,
    summarize,
)
from doctor.rootfs import RootFS
from doctor.target import Sourced, Target
from tests.nginx import Nginx, nginx_available, worker_user, write_config
from tests.servers import Gunicorn, free_port, wait_for_port

SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture(autouse=True)
def utc_local_time(monkeypatch):
    """Run every test with UTC as the local time zone, whatever the machine's."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def sample(name: str) -> list[str]:
    return (SAMPLES / name).read_text(encoding="utf-8").splitlines()


def at(name: str, number: int) -> str:
    """Return line ``number`` (1-based) of a sample."""
    return sample(name)[number - 1]


def line_numbers(name: str, events: list[Event]) -> list[int]:
    lines = sample(name)
    return [lines.index(event.line) + 1 for event in events]


# --- nginx classification ---------------------------------------------------

# line number in nginx-error.log, signature, upstream, nginx pid, status
NGINX_ROWS = [
    (2, "nginx.refused", "127.0.0.1:8000", 19614, 502),
    (3, "nginx.refused", "[::1]:8000", 19614, 502),
    (4, "nginx.premature_close", "127.0.0.1:8000", 20102, 502),
    (5, "nginx.unix_missing", "unix:/run/app/gunicorn.sock", 19615, 502),
    (6, "nginx.unix_permission", "unix:/srv/shop/run/gunicorn.sock", 19615, 502),
    (7, "nginx.unix_refused", "unix:/run/app/gunicorn.sock", 19614, 502),
    (8, "nginx.tcp_permission", "127.0.0.1:8000", 20101, 502),
    (9, "nginx.connect_timeout", "127.0.0.1:8001", 20102, 504),
    (10, "nginx.read_timeout", "127.0.0.1:8000", 20102, 504),
    (11, "nginx.reset", "unix:/run/shop/gunicorn.sock", 20103, 502),
    (12, "nginx.no_live_upstreams", "shop_backend", 20103, 502),
    (13, "nginx.too_big_header", "127.0.0.1:8000", 20103, 502),
    (14, "nginx.invalid_header", "127.0.0.1:8000", 20103, 502),
    (15, "nginx.body_too_large", None, 20103, 413),
    # Cut off while reading the body: the client already had a status line.
    (18, "nginx.premature_close", "127.0.0.1:8000", 20103, None),
    (20, "nginx.refused", "127.0.0.1:3031", 20104, 502),
    (21, "nginx.connect_failed", "[::1]:8000", 20104, 502),
    (22, "nginx.reset", "127.0.0.1:8000", 20104, 502),
    (23, "nginx.send_timeout", "127.0.0.1:8000", 20104, 504),
]


@pytest.mark.parametrize(
    ("number", "signature", "upstream", "pid", "status"), NGINX_ROWS
)
def test_nginx_line(number, signature, upstream, pid, status):
    line = at("nginx-error.log", number)

    events = classify_nginx([line])

    assert len(events) == 1
    (event,) = events
    assert event.source == "nginx"
    assert event.signature == signature
    assert event.upstream == upstream
    assert event.pid == pid
    assert event.status == status
    assert event.line == line
    assert event.time is not None


def test_nginx_sample_skips_other_lines():
    events = classify_nginx(sample("nginx-error.log"))

    assert line_numbers("nginx-error.log", events) == [row[0] for row in NGINX_ROWS]


def test_nginx_context_fields():
    (event,) = classify_nginx([at("nginx-error.log", 6)])

    assert event.client == "198.51.100.7"
    assert event.server == "shop.example.test"
    assert event.request == "GET /products?page=2 HTTP/1.1"
    assert event.host == "shop.example.test"
    assert event.level == "crit"
    assert event.extra["errno"] == "13"
    assert event.time == datetime(2026, 12, 4, 15, 27, 40, tzinfo=UTC)


def test_nginx_body_size_in_extra():
    (event,) = classify_nginx([at("nginx-error.log", 15)])

    assert event.extra["bytes"] == "5242880"
    assert event.request == "POST /upload HTTP/1.1"


def test_nginx_line_behind_syslog_prefix():
    line = "Dec  4 15:26:23 web1 nginx: " + at("nginx-error.log", 2)

    (event,) = classify_nginx([line])

    assert event.signature == "nginx.refused"
    assert event.pid == 19614
    assert event.upstream == "127.0.0.1:8000"


# --- gunicorn classification ------------------------------------------------

# sample, line number, signature, pid that logged, worker pid
GUNICORN_ROWS = [
    ("gunicorn-error.log", 1, "gunicorn.starting", 19695, None),
    ("gunicorn-error.log", 2, "gunicorn.listening", 19695, None),
    ("gunicorn-error.log", 4, "gunicorn.booting_worker", 19696, 19696),
    ("gunicorn-error.log", 6, "gunicorn.worker_timeout", 19695, 19696),
    ("gunicorn-error.log", 7, "gunicorn.sigkill", 19695, 19696),
    ("gunicorn-error.log", 13, "gunicorn.error_handling_request", 19730, 19730),
    ("gunicorn-error.log", 24, "gunicorn.worker_signal", 19695, 19741),
    ("gunicorn-error.log", 26, "gunicorn.worker_exit", 19695, 19755),
    ("gunicorn-error.log", 29, "gunicorn.reload", 19695, None),
    ("gunicorn-startup.log", 2, "gunicorn.connection_in_use", 31200, None),
    ("gunicorn-startup.log", 12, "gunicorn.cannot_connect", 31200, None),
    ("gunicorn-startup.log", 14, "gunicorn.invalid_address", 31388, None),
    ("gunicorn-startup.log", 24, "gunicorn.app_load_failed", 31502, None),
    ("gunicorn-startup.log", 29, "gunicorn.exception_in_worker", 31650, 31650),
    ("gunicorn-startup.log", 63, "gunicorn.worker_exit", 31611, 31650),
    ("gunicorn-startup.log", 65, "gunicorn.worker_boot_failed", 31611, None),
    ("gunicorn-journal.log", 3, "gunicorn.already_running", 4120, None),
    ("gunicorn-journal.log", 10, "gunicorn.app_import_error", 4190, None),
    ("gunicorn-journal.log", 27, "gunicorn.worker_timeout", 4301, 4303),
]


@pytest.mark.parametrize(
    ("name", "number", "signature", "pid", "worker"), GUNICORN_ROWS
)
def test_gunicorn_line(name, number, signature, pid, worker):
    line = at(name, number)

    events = classify_gunicorn([line])

    assert len(events) == 1
    (event,) = events
    assert event.source == "gunicorn"
    assert event.signature == signature
    assert event.pid == pid
    assert event.worker_pid == worker
    assert event.upstream is None
    assert event.time is not None


def test_gunicorn_sample_signatures():
    events = classify_gunicorn(sample("gunicorn-error.log"))

    assert [e.signature for e in events] == [
        "gunicorn.starting",
        "gunicorn.listening",
        "gunicorn.booting_worker",
        "gunicorn.booting_worker",
        "gunicorn.worker_timeout",
        "gunicorn.sigkill",
        "gunicorn.booting_worker",
        "gunicorn.sigkill",
        "gunicorn.booting_worker",
        "gunicorn.sigkill",
        "gunicorn.booting_worker",
        "gunicorn.error_handling_request",
        "gunicorn.worker_signal",
        "gunicorn.booting_worker",
        "gunicorn.worker_exit",
        "gunicorn.booting_worker",
        "gunicorn.reload",
        "gunicorn.booting_worker",
        "gunicorn.booting_worker",
        "gunicorn.worker_signal",
    ]


def test_gunicorn_values_in_extra():
    starting, listening = classify_gunicorn(sample("gunicorn-startup.log")[24:26])
    (exit_event,) = classify_gunicorn([at("gunicorn-error.log", 26)])
    (in_use,) = classify_gunicorn([at("gunicorn-startup.log", 2)])

    assert starting.extra["version"] == "27.0.1"
    assert listening.extra["addresses"] == "http://127.0.0.1:8000,http://[::1]:8000"
    assert exit_event.extra["exit_code"] == "1"
    assert in_use.extra["address"] == "('127.0.0.1', 8000)"


def test_gunicorn_traceback_exception():
    events = classify_gunicorn(sample("gunicorn-error.log"))
    startup = classify_gunicorn(sample("gunicorn-startup.log"))

    request = next(e for e in events if e.signature.endswith("error_handling_request"))
    boot = next(e for e in startup if e.signature.endswith("exception_in_worker"))
    assert request.extra["request"] == "GET /orders/42"
    assert request.extra["exception"] == "ZeroDivisionError: division by zero"
    assert request.status == 500
    assert boot.extra["exception"] == (
        "ModuleNotFoundError: No module named 'shop.settings_prod'"
    )


def test_gunicorn_journal_lines():
    events = classify_gunicorn(sample("gunicorn-journal.log"))

    by_signature = {e.signature: e for e in events}
    running = by_signature["gunicorn.already_running"]
    request = by_signature["gunicorn.error_handling_request"]
    assert running.extra["running_pid"] == "3981"
    assert running.extra["pidfile"] == "/run/shop/gunicorn.pid"
    assert running.time == datetime(2026, 12, 4, 10, 2, 11, tzinfo=UTC)
    assert by_signature["gunicorn.app_import_error"].extra["message"] == (
        "Failed to find attribute 'application' in 'shop.wsgi'."
    )
    assert request.extra["exception"] == (
        "psycopg.OperationalError: connection is bad: Connection refused"
    )


def test_gunicorn_skips_traceback_source():
    # The source line that raises AppImportError quotes the message text.
    lines = [
        '  File "/srv/venv/lib/python3.11/site-packages/gunicorn/util.py", line 380',
        '    raise AppImportError("Failed to find attribute %r in %r." % (name, mod))',
        "Using worker: sync",
        "[2026-12-04 15:26:32 +0000] [19695] [CRITICAL] DIRTY WORKER TIMEOUT (pid:7)",
    ]

    assert classify_gunicorn(lines) == []


def test_custom_format_ignored():
    lines = ["%(message)s only", "", "   ", "\ufffd\ufffd", "GET / 200 0.003"]

    assert classify_gunicorn(lines) == []
    assert classify_nginx(lines) == []
    assert classify_kernel(lines) == []


# --- kernel classification --------------------------------------------------


def test_kernel_dmesg_t():
    events = classify_kernel(sample("dmesg-T.txt"))

    assert [e.signature for e in events] == ["kernel.oom_kill", "kernel.oom_kill"]
    assert [e.pid for e in events] == [4242, 19697]
    assert line_numbers("dmesg-T.txt", events) == [2, 11]
    assert events[1].extra == {
        "process": "gunicorn",
        "memcg": "/system.slice/shop.service",
    }
    assert events[1].time == datetime(2026, 12, 4, 15, 40, 10, tzinfo=UTC)


def test_kernel_raw_dmesg_with_boot_time():
    boot = datetime(2026, 12, 4, 12, 23, 7, tzinfo=UTC).timestamp()

    events = classify_kernel(sample("dmesg-raw.txt"), boot_time=boot)
    without_boot = classify_kernel(sample("dmesg-raw.txt"))

    assert [e.pid for e in events] == [4242, 19697]
    assert events[1].time == datetime(2026, 12, 4, 15, 40, 9, 517830, tzinfo=UTC)
    assert [e.time for e in without_boot] == [None, None]


def test_kernel_syslog_files():
    kern = classify_kernel(sample("kern.log"))
    messages = classify_kernel(sample("messages"))

    assert [e.pid for e in kern] == [19697]
    assert (kern[0].time.month, kern[0].time.day) == (12, 4)
    assert [e.pid for e in messages] == [19697]
    assert messages[0].time.year == 2026


def test_kernel_old_kill_message():
    lines = [
        (
            "[ 9101.000001] Out of memory: Kill process 7311 (gunicorn) score 912"
            " or sacrifice child"
        ),
        (
            "[ 9101.000152] Killed process 7311 (gunicorn) total-vm:1948276kB,"
            " anon-rss:1701220kB, file-rss:0kB"
        ),
    ]

    events = classify_kernel(lines)

    assert [e.pid for e in events] == [7311]
    assert events[0].line == lines[1]


# --- SIGKILL correlation ----------------------------------------------------


def kills(events: list[Event]) -> dict[int, Event]:
    return {e.worker_pid: e for e in events if e.signature.endswith("kill")}


def test_sigkill_after_timeout_is_timeout():
    gunicorn = classify_gunicorn(sample("gunicorn-error.log"))
    kernel = classify_kernel(sample("dmesg-T.txt"))

    result = kills(correlate(gunicorn, kernel))

    assert result[19696].signature == "gunicorn.timeout_kill"
    assert "not out of memory" in result[19696].note


def test_sigkill_named_by_kernel_is_oom():
    gunicorn = classify_gunicorn(sample("gunicorn-error.log"))
    kernel = classify_kernel(sample("dmesg-T.txt"))

    result = kills(correlate(gunicorn, kernel))

    assert result[19697].signature == "gunicorn.oom_kill"
    assert "pid=19697" in result[19697].note


def test_sigkill_unexplained_stays():
    gunicorn = classify_gunicorn(sample("gunicorn-error.log"))
    kernel = classify_kernel(sample("dmesg-T.txt"))

    with_kernel = kills(correlate(gunicorn, kernel))
    without_kernel = kills(correlate(gunicorn, None))

    assert with_kernel[19712].signature == "gunicorn.sigkill"
    assert "does not name pid 19712" in with_kernel[19712].note
    assert without_kernel[19697].signature == "gunicorn.sigkill"
    assert "OOM killer or an operator" in without_kernel[19697].note
    assert "not readable" in without_kernel[19697].note
    assert without_kernel[19696].signature == "gunicorn.timeout_kill"


def test_correlate_keeps_other_events():
    gunicorn = classify_gunicorn(sample("gunicorn-error.log"))

    result = correlate(gunicorn, [])

    assert len(result) == len(gunicorn)
    unchanged = [(a, b) for a, b in zip(gunicorn, result, strict=True) if a != b]
    assert {a.signature for a, _ in unchanged} == {"gunicorn.sigkill"}


def test_reused_pid_not_a_timeout():
    lines = [
        "[2026-12-04 15:26:32 +0000] [100] [CRITICAL] WORKER TIMEOUT (pid:200)",
        (
            "[2026-12-04 15:26:33 +0000] [100] [ERROR] Worker (pid:200) exited with"
            " code 1."
        ),
        "[2026-12-04 18:00:00 +0000] [200] [INFO] Booting worker with pid: 200",
        (
            "[2026-12-04 19:00:00 +0000] [100] [ERROR] Worker (pid:200) was sent"
            " SIGKILL! Perhaps out of memory?"
        ),
    ]

    (kill,) = kills(correlate(classify_gunicorn(lines), None)).values()

    assert kill.signature == "gunicorn.sigkill"


def test_distant_oom_not_matched():
    gunicorn = classify_gunicorn([at("gunicorn-error.log", 9)])
    # The same pid, killed by the OOM killer two hours earlier.
    kernel = classify_kernel([at("dmesg-T.txt", 12).replace("15:40:10", "13:40:10")])

    (kill,) = correlate(gunicorn, kernel)

    assert kill.signature == "gunicorn.sigkill"


# --- summaries and churn ----------------------------------------------------


def test_summarize_counts_and_samples():
    events = classify_gunicorn(sample("gunicorn-error.log"))

    summaries = summarize(events)

    boots = summaries["gunicorn.booting_worker"]
    assert list(summaries)[:3] == [
        "gunicorn.starting",
        "gunicorn.listening",
        "gunicorn.booting_worker",
    ]
    assert boots.count == 9
    assert boots.first == datetime(2026, 12, 4, 15, 20, tzinfo=UTC)
    assert boots.last == datetime(2026, 12, 4, 16, 4, tzinfo=UTC)
    assert len(boots.samples) == 3
    assert boots.samples[0] == at("gunicorn-error.log", 4)
    assert boots.samples[-1] == at("gunicorn-error.log", 31)
    assert summaries["gunicorn.sigkill"].count == 3


def test_booting_rate_skips_initial_boots():
    events = classify_gunicorn(sample("gunicorn-error.log"))

    # Five respawns in the hour before the last line (16:05:01); the two
    # boots after the start and the two after the reload are not respawns.
    assert booting_rate(events, timedelta(hours=1)) == pytest.approx(5 / 60)
    assert booting_rate(events, timedelta(hours=1), workers=2) == pytest.approx(5 / 60)
    assert booting_rate(events, timedelta(minutes=10)) == pytest.approx(2 / 10)
    # With one worker, the second boot after the start and after the reload
    # are respawns.
    assert booting_rate(events, timedelta(hours=1), workers=1) == pytest.approx(7 / 60)


def test_booting_rate_without_events():
    assert booting_rate([], timedelta(minutes=5)) == 0.0
    with pytest.raises(ValueError, match="invalid window"):
        booting_rate([], timedelta(0))


# --- time stamps ------------------------------------------------------------


def test_parse_time_formats():
    local = datetime(2026, 12, 4, 15, 26, 32, tzinfo=UTC)

    assert parse_time("[2026-12-04 17:26:32 +0200] [1] [INFO] x") == local
    assert parse_time("2026/12/04 15:26:32 [error] 1#1: x") == local
    assert parse_time("2026-12-04T15:26:32+0000 web1 gunicorn[1]: x") == local
    assert parse_time("2026-12-04T16:26:32+01:00 web1 kernel: x") == local
    assert parse_time("[Fri Dec  4 15:26:32 2026] Out of memory") == local
    assert parse_time("[12345.678901] Out of memory", boot_time=0) == datetime(
        1970, 1, 1, 3, 25, 45, 678901, tzinfo=UTC
    )


def test_parse_time_rejects_other_text():
    assert parse_time("") is None
    assert parse_time("[12345.678901] no boot time given") is None
    assert parse_time("2026/13/40 15:26:32 [error] month 13") is None
    assert parse_time("Traceback (most recent call last):") is None
    assert parse_time("    time.sleep(30)") is None


def test_nginx_time_is_local(monkeypatch):
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()

    stamp = parse_time("2026/12/04 15:26:23 [error] 1#1: x")

    assert stamp == datetime(2026, 12, 4, 20, 26, 23, tzinfo=UTC)


def test_syslog_time_never_in_future():
    now = datetime.now().astimezone()
    ahead = now + timedelta(days=3)
    line = f"{ahead:%b} {ahead.day:2d} {ahead:%H:%M:%S} web1 kernel: x"

    stamp = parse_time(line)

    assert stamp < now
    assert (stamp.month, stamp.day) == (ahead.month, ahead.day)


def test_parse_since_forms():
    now = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)

    assert parse_since("30m", now=now) == datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
    assert parse_since("2h", now=now) == datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    assert parse_since("1d", now=now) == datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
    assert parse_since("2026-12-04 15:00") == datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="invalid time 'yesterday'"):
        parse_since("yesterday")


# --- reading the end of a file ----------------------------------------------


def test_read_whole_small_file():
    tail = read_tail(SAMPLES / "gunicorn-error.log")

    assert tail.lines == sample("gunicorn-error.log")
    assert tail.truncated is False
    assert tail.error is None
    assert tail.binary is False
    assert tail.path == str(SAMPLES / "gunicorn-error.log")


def test_byte_limit_drops_partial_line(tmp_path):
    path = tmp_path / "numbers.log"
    path.write_text("".join(f"line {n:04d}\n" for n in range(1, 1001)))

    tail = read_tail(path, max_bytes=105)

    # 105 bytes end with ten whole lines of ten bytes and the five last
    # bytes of the line before them.
    assert tail.lines == [f"line {n:04d}" for n in range(991, 1001)]
    assert tail.truncated is True
    assert tail.bytes_read == 105


def test_last_line_without_newline(tmp_path):
    path = tmp_path / "open.log"
    path.write_bytes(b"first\r\nsecond\r\nthird, still being written")

    tail = read_tail(path)

    assert tail.lines == ["first", "second", "third, still being written"]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.log"
    path.touch()

    tail = read_tail(path)

    assert tail.lines == []
    assert tail.error is None
    assert tail.truncated is False


def test_long_line_across_blocks(tmp_path):
    path = tmp_path / "long.log"
    long_line = "x" * (3 * BLOCK_SIZE + 17)
    path.write_text(f"before\n{long_line}\nafter\n")

    whole = read_tail(path)
    cut = read_tail(path, max_bytes=2 * BLOCK_SIZE)

    assert whole.lines == ["before", long_line, "after"]
    assert cut.lines == ["after"]
    assert cut.truncated is True


def test_since_keeps_window_and_tracebacks():
    since = datetime(2026, 12, 4, 15, 58, tzinfo=UTC)

    tail = read_tail(SAMPLES / "gunicorn-error.log", since=since)

    lines = sample("gunicorn-error.log")
    assert tail.lines == lines[12:]
    assert tail.lines[1] == "Traceback (most recent call last):"
    assert tail.truncated is False


def test_since_drops_traceback_of_older_line():
    since = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)

    tail = read_tail(SAMPLES / "gunicorn-error.log", since=since)

    assert tail.lines[0] == at("gunicorn-error.log", 24)
    assert not any("Traceback" in line for line in tail.lines)


def test_since_naive_is_local():
    naive = datetime(2026, 12, 4, 15, 58)

    tail = read_tail(SAMPLES / "gunicorn-error.log", since=naive)

    assert tail.lines[0] == at("gunicorn-error.log", 13)


def test_since_without_times_keeps_all(tmp_path):
    path = tmp_path / "custom.log"
    path.write_text("no time here\nnor here\n")

    tail = read_tail(path, since=datetime(2030, 1, 1, tzinfo=UTC))

    assert tail.lines == ["no time here", "nor here"]


class CountingReader:
    """A file object wrapper that counts the bytes read through it."""

    def __init__(self, raw):
        self.raw = raw
        self.bytes = 0

    def read(self, size=-1):
        data = self.raw.read(size)
        self.bytes += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.raw.close()


@pytest.fixture
def counted(monkeypatch):
    """Count the bytes that read_tail reads, per opened file."""
    readers: list[CountingReader] = []
    real_open = logscan._open

    def open_counted(path):
        reader = CountingReader(real_open(path))
        readers.append(reader)
        return reader

    monkeypatch.setattr(logscan, "_open", open_counted)
    return readers


def write_day(handle, day: int, count: int) -> list[str]:
    lines = [
        f"[2026-12-{day:02d} {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}"
        f" +0000] [19695] [INFO] Booting worker with pid: {20000 + n}"
        for n in range(count)
    ]
    handle.write(("\n".join(lines) + "\n").encode())
    return lines


def test_sparse_200mb_read_from_end(tmp_path, counted):
    path = tmp_path / "big.log"
    subprocess.run(["truncate", "-s", "200M", str(path)], check=True)
    with path.open("ab") as handle:
        write_day(handle, 3, 5000)
        recent = write_day(handle, 4, 20)

    windowed = read_tail(path, since=datetime(2026, 12, 4, tzinfo=UTC))
    capped = read_tail(path, max_bytes=1 << 20)

    assert path.stat().st_size > 200 << 20
    assert windowed.lines == recent
    assert windowed.truncated is False
    assert counted[0].bytes == windowed.bytes_read
    assert counted[0].bytes <= BLOCK_SIZE
    assert counted[1].bytes == 1 << 20
    assert capped.truncated is True
    assert capped.lines[-20:] == recent
    assert all("Booting worker" in line for line in capped.lines)


def test_cost_independent_of_size(tmp_path, counted):
    small = tmp_path / "small.log"
    large = tmp_path / "large.log"
    subprocess.run(["truncate", "-s", "1M", str(small)], check=True)
    subprocess.run(["truncate", "-s", "200M", str(large)], check=True)
    for path in (small, large):
        with path.open("ab") as handle:
            write_day(handle, 4, 3000)

    read_tail(small, max_bytes=256 << 10)
    read_tail(large, max_bytes=256 << 10)

    assert counted[0].bytes == 256 << 10
    assert counted[1].bytes == 256 << 10


def test_binary_file_flagged(tmp_path):
    path = tmp_path / "binary.log"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage + b"\n" + at("nginx-error.log", 2).encode() + b"\n")

    tail = read_tail(path)

    assert tail.binary is True
    assert tail.error.startswith(f"{path} contains ")
    assert "NUL bytes" in tail.error
    assert not any("\0" in line for line in tail.lines)
    assert [e.signature for e in classify_nginx(tail.lines)] == ["nginx.refused"]
    assert classify_gunicorn(tail.lines) == []


def test_nul_run_after_crash(tmp_path):
    path = tmp_path / "crashed.log"
    lines = sample("gunicorn-error.log")
    path.write_bytes(
        ("\n".join(lines[:10]) + "\n").encode()
        + b"\0" * 4096
        + ("\n".join(lines[10:]) + "\n").encode()
    )

    tail = read_tail(path)

    assert tail.binary is True
    assert "4096 NUL bytes" in tail.error
    assert len(classify_gunicorn(tail.lines)) == len(
        classify_gunicorn(sample("gunicorn-error.log"))
    )


def test_invalid_utf8_replaced(tmp_path):
    path = tmp_path / "latin1.log"
    path.write_bytes(b"caf\xe9 ol\xe9\n" + at("gunicorn-error.log", 6).encode() + b"\n")

    tail = read_tail(path)

    assert tail.lines[0] == "caf\ufffd ol\ufffd"
    assert tail.binary is False
    assert tail.error is None
    assert classify_gunicorn(tail.lines)[0].signature == "gunicorn.worker_timeout"


def test_missing_file(tmp_path):
    path = tmp_path / "absent.log"

    tail = read_tail(path)

    assert tail.lines == []
    assert tail.error == f"{path} does not exist"


def test_dangling_symlink(tmp_path):
    path = tmp_path / "error.log"
    path.symlink_to(tmp_path / "rotated" / "error.log")

    tail = read_tail(path)

    assert tail.error == f"{path} is a dangling symlink to {tmp_path}/rotated/error.log"


def test_directory_rejected(tmp_path):
    tail = read_tail(tmp_path)

    assert tail.error == f"{tmp_path} is a directory, not a log file"


def test_fifo_rejected_without_blocking(tmp_path):
    path = tmp_path / "pipe.log"
    os.mkfifo(path)

    tail = read_tail(path)

    assert tail.lines == []
    assert tail.error.startswith(f"{path} is not a regular file")


def test_invalid_byte_limit():
    tail = read_tail(SAMPLES / "kern.log", max_bytes=0)

    assert tail.error == "invalid byte limit 0: use 1 or more"


# The tests run as root, who can read any file. To get a real EACCES the read
# runs in a child that setpriv(1) starts as uid and gid 65534 ("nobody"). The
# child loads doctor/logscan.py by path: it imports only the standard library.
READ_AS_NOBODY = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("logscan_as_nobody", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
tail = module.read_tail(sys.argv[2])
print(json.dumps({"uid": os.getuid(), "lines": tail.lines, "error": tail.error}))
"""


@pytest.fixture
def shared_dir():
    # pytest's tmp_path is inside a directory with mode 0700, which uid 65534
    # cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="logscan-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def read_as_nobody(path: Path) -> dict:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv(1) is not installed")
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    result = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            READ_AS_NOBODY,
            logscan.__file__,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_unreadable_file(shared_dir):
    readable = shared_dir / "readable.log"
    readable.write_text(at("gunicorn-error.log", 6) + "\n")
    readable.chmod(0o644)
    unreadable = shared_dir / "error.log"
    unreadable.write_text(at("gunicorn-error.log", 6) + "\n")
    unreadable.chmod(0o640)

    control = read_as_nobody(readable)
    outcome = read_as_nobody(unreadable)

    assert control == {
        "uid": 65534,
        "lines": [at("gunicorn-error.log", 6)],
        "error": None,
    }
    assert outcome["uid"] == 65534
    assert outcome["lines"] == []
    assert outcome["error"].startswith(
        f"{unreadable} cannot be read: permission denied"
    )
    assert "mode -rw-r-----" in outcome["error"]


def test_unreachable_directory(shared_dir):
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    (private / "error.log").write_text("x\n")

    outcome = read_as_nobody(private / "error.log")

    assert outcome["error"].startswith(
        f"{private / 'error.log'} cannot be read: permission denied"
    )


# --- reading a command's output ---------------------------------------------


def test_command_output_end_kept():
    tail = read_command(["seq", "1", "100000"], max_bytes=30)

    # The last 30 bytes hold 99997 to 100000 and the end of 99996.
    assert tail.lines == [str(n) for n in range(99997, 100001)]
    assert tail.truncated is True
    assert tail.error is None


def test_command_newest_first_stops_early():
    # 20 million lines would take seconds to print; the read stops at 1 KiB.
    tail = read_command(
        ["seq", "20000000", "-1", "1"], max_bytes=1024, newest_first=True
    )

    assert tail.lines[-1] == "20000000"
    assert tail.lines == [
        str(n) for n in range(20000000 - len(tail.lines) + 1, 20000001)
    ]
    assert tail.truncated is True
    assert tail.error is None
    assert tail.bytes_read < 1024 + 2 * BLOCK_SIZE


def test_command_failure_reported():
    missing = read_command(["/nonexistent/journalctl"], label="journalctl")
    failing = read_command(
        [sys.executable, "-c", "import sys; sys.exit('read kernel buffer failed')"],
        label="dmesg -T",
    )

    assert missing.error == "journalctl cannot run: No such file or directory"
    assert failing.error == (
        "dmesg -T failed with exit code 1: read kernel buffer failed"
    )


def test_command_timeout():
    tail = read_command(
        [
            sys.executable,
            "-c",
            "import time; print('early', flush=True); time.sleep(30)",
        ],
        timeout=1.0,
        label="slow",
    )

    assert tail.lines == ["early"]
    assert tail.error.startswith("slow did not finish within 1 seconds")


def test_command_journal_markers_dropped():
    script = "print('-- No entries --'); print('-- Boot 1a2b3c --'); print('real')"

    tail = read_command([sys.executable, "-c", script])

    assert tail.lines == ["real"]


# --- facts ------------------------------------------------------------------


def make_root(tmp_path: Path, config: str) -> Path:
    root = tmp_path / "root"
    (root / "srv/shop").mkdir(parents=True)
    (root / "srv/shop/gunicorn.conf.py").write_text(config)
    (root / "srv/shop/app.py").write_text(
        "def app(environ, start_response):\n    pass\n"
    )
    return root


def put(root: Path, path: str, sample_name: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / sample_name, target)


def make_context(root: Path | str, chdir: str = "/srv/shop", **options) -> Context:
    target = Target(fs=RootFS(root), chdir=Sourced(chdir, "test"))
    settings = Options(static=True)
    for name, value in options.items():
        setattr(settings, name, value)
    return Context(target, settings)


def test_gunicorn_log_fact_reads_errorlog(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")
    put(root, "/var/log/shop/error.log", "gunicorn-error.log")

    evidence = make_context(root).fact("gunicorn_log")

    assert [t.path for t in evidence.tails] == [str(root / "var/log/shop/error.log")]
    assert evidence.errors == []
    assert len(evidence.events) == 20
    assert evidence.origin == "errorlog setting (/srv/shop/gunicorn.conf.py:1)"


def test_gunicorn_log_relative_path(tmp_path):
    root = make_root(tmp_path, "errorlog = 'logs/error.log'\n")
    put(root, "/srv/shop/logs/error.log", "gunicorn-startup.log")

    evidence = make_context(root).fact("gunicorn_log")

    assert evidence.tails[0].path == str(root / "srv/shop/logs/error.log")
    assert evidence.events[0].signature == "gunicorn.starting"


def test_gunicorn_log_window_options(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")
    put(root, "/var/log/shop/error.log", "gunicorn-error.log")
    since = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)

    evidence = make_context(root, since=since).fact("gunicorn_log")
    as_text = make_context(root, since="2026-12-04 16:00").fact("gunicorn_log")
    capped = make_context(root, log_bytes=200).fact("gunicorn_log")

    assert evidence.tails[0].lines[0] == at("gunicorn-error.log", 24)
    assert as_text.tails[0].lines == evidence.tails[0].lines
    assert capped.tails[0].truncated is True
    assert capped.tails[0].bytes_read == 200


def test_gunicorn_log_bad_options(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")

    with pytest.raises(FactUnavailable, match="--since: invalid time 'soon'"):
        make_context(root, since="soon").fact("gunicorn_log")
    with pytest.raises(FactUnavailable, match="invalid log byte limit -1"):
        make_context(root, log_bytes=-1).fact("gunicorn_log")


def test_gunicorn_log_missing_file(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")

    evidence = make_context(root).fact("gunicorn_log")

    assert evidence.events == []
    assert evidence.errors == [f"{root}/var/log/shop/error.log does not exist"]


def test_gunicorn_log_dangling_symlink_in_root(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")
    (root / "var/log/shop").mkdir(parents=True)
    (root / "var/log/shop/error.log").symlink_to("/data/logs/error.log")

    evidence = make_context(root).fact("gunicorn_log")

    assert evidence.errors == [
        (
            "/var/log/shop/error.log cannot be read: dangling symlink"
            " /var/log/shop/error.log -> /data/logs/error.log"
        )
    ]


def test_gunicorn_log_expression(tmp_path):
    root = make_root(tmp_path, "import os\nerrorlog = os.environ['LOG']\n")

    with pytest.raises(FactUnavailable, match="errorlog is set by an expression"):
        make_context(root).fact("gunicorn_log")


def test_gunicorn_stderr_without_unit(tmp_path):
    root = make_root(tmp_path, "bind = '127.0.0.1:8000'\n")

    with pytest.raises(FactUnavailable, match="no systemd unit is known"):
        make_context(root).fact("gunicorn_log")


@pytest.fixture
def fake_journalctl(tmp_path, monkeypatch):
    """Put a journalctl on PATH that prints the journal sample newest first.

    No journald runs here to write a real journal; the fake prints what
    ``journalctl -o short-iso --reverse`` prints, and records its arguments.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    arguments = tmp_path / "journalctl-arguments"
    script = bin_dir / "journalctl"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {arguments}\n'
        f"tac {SAMPLES / 'gunicorn-journal.log'}\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return arguments


def test_gunicorn_stderr_read_from_journal(tmp_path, fake_journalctl):
    root = make_root(tmp_path, "bind = 'unix:/run/shop/gunicorn.sock'\n")
    (root / "var/log/journal").mkdir(parents=True)
    ctx = make_context(root, since=datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    ctx.target.unit = Sourced("/etc/systemd/system/shop.service", "test")

    evidence = ctx.fact("gunicorn_log")

    arguments = fake_journalctl.read_text().split("\n")
    assert evidence.tails[0].lines == sample("gunicorn-journal.log")
    assert evidence.tails[0].error is None
    assert "gunicorn.already_running" in {e.signature for e in evidence.events}
    assert arguments[:2] == ["--unit", "shop.service"]
    assert "--reverse" in arguments
    assert arguments[arguments.index("--directory") + 1] == str(
        root / "var/log/journal"
    )
    assert arguments[arguments.index("--since") + 1] == "2026-12-04 10:00:00"


def test_gunicorn_stderr_root_without_journal(tmp_path, fake_journalctl):
    root = make_root(tmp_path, "bind = '127.0.0.1:8000'\n")
    ctx = make_context(root)
    ctx.target.unit = Sourced("/etc/systemd/system/shop.service", "test")

    with pytest.raises(FactUnavailable, match="has no /var/log/journal"):
        ctx.fact("gunicorn_log")


NGINX_CONF = """
user www-data;
error_log /var/log/nginx/shop-error.log warn;
events {}
http {
    error_log syslog:server=unix:/dev/log;
    server {
        listen 80;
        server_name shop.example.test;
        error_log logs/site-error.log;
        location / { proxy_pass http://127.0.0.1:8000; }
    }
}
"""


def test_nginx_log_fact_reads_every_error_log(tmp_path):
    root = make_root(tmp_path, "")
    (root / "etc/nginx").mkdir(parents=True)
    (root / "etc/nginx/nginx.conf").write_text(NGINX_CONF)
    put(root, "/var/log/nginx/shop-error.log", "nginx-error.log")

    evidence = make_context(root).fact("nginx_log")

    paths = [t.path for t in evidence.tails]
    assert paths == [
        str(root / "var/log/nginx/shop-error.log"),
        "syslog:server=unix:/dev/log",
        str(root / "usr/share/nginx/logs/site-error.log"),
    ]
    assert evidence.tails[0].error is None
    assert "is not a file" in evidence.tails[1].error
    assert evidence.tails[2].error.endswith("does not exist")
    assert len(evidence.events) == len(NGINX_ROWS)
    assert "/etc/nginx/nginx.conf:3" in evidence.origin


def test_nginx_log_default_path(tmp_path):
    root = make_root(tmp_path, "")
    (root / "etc/nginx").mkdir(parents=True)
    (root / "etc/nginx/nginx.conf").write_text("events {}\nhttp {}\n")
    put(root, "/var/log/nginx/error.log", "nginx-error.log")

    evidence = make_context(root).fact("nginx_log")

    assert [t.path for t in evidence.tails] == [str(root / "var/log/nginx/error.log")]
    assert evidence.origin == "nginx's default error log"


def test_nginx_log_without_nginx(tmp_path):
    root = make_root(tmp_path, "")

    with pytest.raises(FactUnavailable, match="error.log does not exist either"):
        make_context(root).fact("nginx_log")


def test_kernel_log_fact_from_root(tmp_path):
    root = make_root(tmp_path, "")
    put(root, "/var/log/messages", "messages")

    evidence = make_context(root).fact("kernel_log")

    assert evidence.origin == "/var/log/messages"
    assert [e.pid for e in evidence.events] == [19697]


def test_kernel_log_fact_unavailable(tmp_path):
    root = make_root(tmp_path, "")

    with pytest.raises(FactUnavailable) as caught:
        make_context(root).fact("kernel_log")

    assert "not the --root tree's" in caught.value.reason
    assert "/var/log/kern.log does not exist" in caught.value.reason
    assert "/var/log/messages does not exist" in caught.value.reason


def test_worker_kills_from_root(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")
    put(root, "/var/log/shop/error.log", "gunicorn-error.log")
    put(root, "/var/log/messages", "messages")

    result = kills(worker_kills(make_context(root)))

    assert result[19696].signature == "gunicorn.timeout_kill"
    assert result[19697].signature == "gunicorn.oom_kill"
    assert result[19712].signature == "gunicorn.sigkill"


def test_worker_kills_without_kernel_log(tmp_path):
    root = make_root(tmp_path, "errorlog = '/var/log/shop/error.log'\n")
    put(root, "/var/log/shop/error.log", "gunicorn-error.log")

    result = kills(worker_kills(make_context(root)))

    assert result[19697].signature == "gunicorn.sigkill"
    assert "not readable" in result[19697].note


# --- real servers -----------------------------------------------------------

# A request to /stuck blocks SIGABRT, as a C extension stuck in a call can,
# so gunicorn's abort after WORKER TIMEOUT does not end the worker and the
# master kills it with SIGKILL.
SLOW_APP = """
import signal
import time


def app(environ, start_response):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    time.sleep(30)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"late\\n"]
"""


def wait_for_text(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} did not appear in {path}")


def test_real_gunicorn_timeout_kill(tmp_path, venv_gunicorn_new):
    (tmp_path / "slow.py").write_text(SLOW_APP)
    errorlog = tmp_path / "error.log"
    port = free_port()
    server = Gunicorn(
        venv_gunicorn_new,
        tmp_path,
        "--no-control-socket",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--timeout",
        "1",
        "--error-logfile",
        str(errorlog),
        "slow:app",
    )
    try:
        wait_for_port(port)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            connection.request("GET", "/stuck")
            connection.getresponse()
        connection.close()
        wait_for_text(errorlog, "was sent SIGKILL")
    finally:
        server.stop()

    events = classify_gunicorn(read_tail(errorlog).lines)
    correlated = correlate(events, None)

    kills = [e for e in correlated if e.signature.endswith("kill")]
    # On a slow machine an idle worker can time out too, so the WORKER
    # TIMEOUT of the killed worker is looked up by its pid.
    kill = kills[0]
    timeouts = [
        e
        for e in events
        if e.signature == "gunicorn.worker_timeout" and e.worker_pid == kill.worker_pid
    ]
    assert [e.signature for e in events[:2]] == [
        "gunicorn.starting",
        "gunicorn.listening",
    ]
    assert events[0].extra["version"] == "27.0.1"
    assert events[1].pid == server.pid
    assert [e.signature for e in kills] == ["gunicorn.timeout_kill"]
    assert len(timeouts) == 1
    assert timeouts[0].pid == server.pid
    assert events.index(timeouts[0]) < correlated.index(kill)
    assert "not out of memory" in kill.note


def send_request(port: int, method: str, path: str, body: bytes | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Host": "example.test"})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")
def test_real_nginx_error_log(tmp_path, shared_dir):
    port = free_port()
    closed = free_port()
    socket_path = shared_dir / "missing.sock"
    conf = write_config(
        tmp_path / "nginx",
        f"""
    server {{
        listen 127.0.0.1:{port};
        server_name example.test;
        client_max_body_size 1k;
        location /tcp/ {{ proxy_pass http://127.0.0.1:{closed}; }}
        location /unix/ {{ proxy_pass http://unix:{socket_path}; }}
    }}
""",
        user=worker_user() or None,
    )
    with Nginx(conf):
        wait_for_port(port)
        statuses = [
            send_request(port, "GET", "/tcp/"),
            send_request(port, "GET", "/unix/"),
            send_request(port, "POST", "/tcp/upload", body=b"x" * 4096),
        ]

    events = classify_nginx(read_tail(tmp_path / "nginx/logs/error.log").lines)

    assert statuses == [502, 502, 413]
    assert [e.signature for e in events] == [
        "nginx.refused",
        "nginx.unix_missing",
        "nginx.body_too_large",
    ]
    assert [e.status for e in events] == statuses
    assert events[0].upstream == f"127.0.0.1:{closed}"
    assert events[1].upstream == f"unix:{socket_path}"
    assert events[0].request == "GET /tcp/ HTTP/1.1"
    assert events[2].extra["bytes"] == "4096"
    assert all(e.client == "127.0.0.1" for e in events)
    assert all(e.time is not None for e in events)
