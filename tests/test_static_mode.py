"""``--static`` executes nothing from the target.

The deployment's gunicorn config file and app write a marker file when they
run, and a real venv with gunicorn is there, so that without --static the
doctor does run them: the same test shows both sides. When strace is
installed, it also records every program started, every outgoing connection
and every file opened, to show that static mode starts no process, sends no
request and reads no process table.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.registry import load_registry
from tests.helpers import REPO, findings_of, run_doctor

pytestmark = pytest.mark.slow

APP_SOURCE = """\
from pathlib import Path

Path({marker!r}).write_text("imported")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""
CONFIG_SOURCE = """\
from pathlib import Path

Path({marker!r}).write_text("executed")
bind = "127.0.0.1:8765"
workers = 2
"""
STATIC_REASON = "static mode executes nothing from the target"
# A line of ``strace -f`` output for a program start, e.g.
# 123  execve("/usr/bin/python3", ["python3", ...], ...) = 0
EXECVE = re.compile(r'^\d+\s+execve(?:at)?\((?:AT_FDCWD, )?"([^"]*)"')
INET_CONNECT = re.compile(r"^\d+\s+connect\(\d+, \{sa_family=AF_INET6?,")
# What psutil opens to list processes and their sockets.
PROCESS_TABLE = re.compile(
    r'openat\(AT_FDCWD, "/proc/(?:\d+/(?:stat|status|cmdline|environ|fd)|net/)'
)


@pytest.fixture
def deployment(tmp_path) -> tuple[Path, Path, Path]:
    """Return the project directory and the two marker files it writes when run."""
    project = tmp_path / "shop"
    project.mkdir()
    app_marker = tmp_path / "executed-app"
    config_marker = tmp_path / "executed-config"
    (project / "app.py").write_text(APP_SOURCE.format(marker=str(app_marker)))
    (project / "gunicorn.conf.py").write_text(
        CONFIG_SOURCE.format(marker=str(config_marker))
    )
    return project, app_marker, config_marker


def target_args(project: Path, venv: Path) -> list[str]:
    return ["--chdir", str(project), "--venv", str(venv)]


def test_static_check_executes_nothing(deployment, venv_gunicorn_new):
    project, app_marker, config_marker = deployment
    args = target_args(project, venv_gunicorn_new)

    result = run_doctor("check", *args, "--static", "--format", "json")
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert not config_marker.exists(), "static mode executed the config file"
    assert not app_marker.exists(), "static mode imported the app"
    assert f"settings are a static estimate ({STATIC_REASON})" in report["notes"]
    (config_file,) = findings_of(report, "config-file")
    assert "static estimate" in config_file["title"]

    needs_execution = [
        spec.id
        for spec in load_registry().checks.values()
        if spec.live or spec.executes
    ]
    assert needs_execution, "no registered check is declared live or executes"
    for check_id in needs_execution:
        findings = findings_of(report, check_id)
        assert findings, f"{check_id} is missing from the report"
        for finding in findings:
            assert finding["severity"] == "skipped", finding
            assert "static mode" in finding["detail"], finding

    # The same deployment without --static: the doctor does run its code.
    live = run_doctor("check", *args, "--format", "json")
    assert "Traceback" not in live.stderr, live.stderr
    live_report = json.loads(live.stdout)
    assert config_marker.read_text() == "executed"
    assert app_marker.read_text() == "imported"
    assert not any(STATIC_REASON in note for note in live_report["notes"])


def test_static_config_command_executes_nothing(deployment, venv_gunicorn_new):
    project, app_marker, config_marker = deployment
    args = target_args(project, venv_gunicorn_new)

    result = run_doctor("config", *args, "--static", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["estimated"] is True
    assert data["estimate_reason"] == STATIC_REASON
    assert data["settings"]["bind"]["value"] == ["127.0.0.1:8765"]
    assert not config_marker.exists()
    assert not app_marker.exists()

    live = run_doctor("config", *args, "--format", "json")
    assert live.returncode == 0, live.stderr
    assert json.loads(live.stdout)["estimated"] is False
    assert config_marker.exists()


def strace_doctor(trace: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the doctor under ``strace -f``, writing the system calls to ``trace``."""
    return subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=execve,execveat,connect,openat",
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "doctor",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def traced(trace: Path, pattern: re.Pattern[str]) -> list[str]:
    return [line for line in trace.read_text().splitlines() if pattern.search(line)]


@pytest.mark.skipif(
    shutil.which("strace") is None,
    reason="strace is not installed; the marker files alone show that static mode"
    " executes nothing",
)
def test_static_check_starts_no_process(deployment, venv_gunicorn_new, tmp_path):
    project, _, _ = deployment
    args = ["check", *target_args(project, venv_gunicorn_new), "--format", "json"]

    static_trace = tmp_path / "static.trace"
    result = strace_doctor(static_trace, *args, "--static")
    if not static_trace.is_file() or "ptrace" in result.stderr.lower():
        pytest.skip(f"strace cannot trace here: {result.stderr.strip()[:200]}")
    assert "Traceback" not in result.stderr, result.stderr
    json.loads(result.stdout)
    started = [EXECVE.match(line).group(1) for line in traced(static_trace, EXECVE)]
    assert started == [sys.executable], "static mode started another program"
    assert traced(static_trace, INET_CONNECT) == []
    assert traced(static_trace, PROCESS_TABLE) == []

    # Without --static the same trace shows the probe, the request and the
    # process table, so the assertions above can fail.
    live_trace = tmp_path / "live.trace"
    strace_doctor(live_trace, *args)
    live_started = [EXECVE.match(line).group(1) for line in traced(live_trace, EXECVE)]
    assert str(venv_gunicorn_new / "bin" / "python") in live_started
    assert traced(live_trace, INET_CONNECT) != []
    assert traced(live_trace, PROCESS_TABLE) != []
