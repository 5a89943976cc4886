"""End to end: a real gunicorn on 127.0.0.1, and the planted faults of a fixture."""

from __future__ import annotations

import collections
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import GUNICORN_NEW_VERSION
from tests.helpers import FIXTURES, REPO, copy_fixture, findings_of, run_doctor

REPORT_KEYS = {"doctor_version", "target", "findings", "summary", "exit_code", "notes"}
FINDING_KEYS = {
    "check",
    "area",
    "severity",
    "title",
    "detail",
    "fix",
    "evidence",
    "location",
    "duration",
    "waiver",
}
SEVERITIES = ("ok", "info", "warning", "error", "skipped")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# What distinguishes each planted fault of fixtures/ecommerce from the other
# findings of the same check: words that its title, detail or evidence contain.
ECOMMERCE_FAULTS = [
    ("venv-interpreter", ("python3.9",)),
    ("venv-launcher", ("launcher", "python3.9")),
    ("venv-requirements", ("redis==5.0.1",)),
    ("venv-requirements", ("requests==2.31.0", "2.28.0")),
    ("app-import", ("'application'",)),
    ("app-import", ("'redis'",)),
    ("config-unknown-names", ("'timout'", "'timeout'")),
    ("config-worker-settings", ("threads = 2", "gthread")),
    ("config-daemon", ("daemon mode is on", "systemd")),
    ("logs-rotation", ("copytruncate", "/etc/logrotate.d/gunicorn")),
    ("pidfile-directory", ("/var/run/gunicorn",)),
    ("pidfile-tmpfs", ("/var/run/gunicorn", "tmpfs")),
    ("systemd-environment", ("SECRET_KEY",)),
]
SECRET_PLACEHOLDER = "fixture-not-a-real-secret"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_accepting(process: subprocess.Popen, port: int, log: Path) -> None:
    """Poll ``port`` until it accepts connections, failing if gunicorn exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"gunicorn exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"gunicorn did not accept connections in {START_TIMEOUT} s")


def stop(process: subprocess.Popen) -> list[psutil.Process]:
    """Stop gunicorn by its PID: SIGTERM, then SIGKILL if it lingers.

    Returns the worker processes the master had, for the caller to check.
    """
    workers = []
    if process.poll() is None:
        try:
            workers = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    # Workers of a killed master exit on their own once they see it gone.
    _, alive = psutil.wait_procs(workers, timeout=STOP_TIMEOUT)
    for worker in alive:
        worker.kill()
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT)
    return workers


def serve_healthy(project: Path, venv: Path, port: int, log: Path):
    """Start the healthy fixture under the venv's gunicorn, bound to ``port``."""
    config = project / "gunicorn.conf.py"
    bind = f'bind = "127.0.0.1:{port}"'
    # The config file and -b agree, so the doctor reads the address that serves.
    config.write_text(re.sub(r"(?m)^bind = .*$", bind, config.read_text()))
    with log.open("wb") as output:
        return subprocess.Popen(
            [
                str(venv / "bin" / "gunicorn"),
                "-c",
                "gunicorn.conf.py",
                "-b",
                f"127.0.0.1:{port}",
                "app:app",
            ],
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def write_nginx_config(directory: Path, port: int) -> Path:
    """Write an nginx config that proxies to gunicorn on ``port``.

    The doctor reads it instead of the host's /etc/nginx, whose sites have
    nothing to do with this test and would make the result depend on the host.
    """
    config = directory / "nginx.conf"
    config.write_text(
        "events {}\n"
        "http {\n"
        "    server {\n"
        "        listen 127.0.0.1:8080;\n"
        f"        location / {{ proxy_pass http://127.0.0.1:{port}; }}\n"
        "    }\n"
        "}\n"
    )
    return config


def assert_contract(report: dict) -> None:
    """Assert the JSON report has the documented fields and consistent counts."""
    assert set(report) == REPORT_KEYS
    assert isinstance(report["doctor_version"], str)
    assert isinstance(report["notes"], list)
    assert set(report["summary"]) == {*SEVERITIES, "waived"}
    counted = collections.Counter(f["severity"] for f in report["findings"])
    assert {s: report["summary"][s] for s in SEVERITIES} == {
        s: counted.get(s, 0) for s in SEVERITIES
    }
    waived = sum(1 for f in report["findings"] if f["waiver"] is not None)
    assert report["summary"]["waived"] == waived
    for finding in report["findings"]:
        assert set(finding) == FINDING_KEYS, finding
        assert finding["severity"] in SEVERITIES
        assert isinstance(finding["evidence"], list)
        assert all(isinstance(line, str) for line in finding["evidence"])
        assert isinstance(finding["duration"], float)
        assert finding["duration"] >= 0
        if finding["location"] is not None:
            assert set(finding["location"]) == {"path", "line"}


def test_real_gunicorn_healthy(tmp_path, venv_gunicorn_new):
    project = copy_fixture("healthy", tmp_path)
    port = free_port()
    log = tmp_path / "gunicorn.log"
    nginx = write_nginx_config(tmp_path, port)
    process = serve_healthy(project, venv_gunicorn_new, port, log)
    # No proxy from the environment: the request must stay on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        wait_until_accepting(process, port, log)
        with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.status == 200
            assert json.load(reply) == {"status": "ok"}

        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "doctor",
                "check",
                "--chdir",
                str(project),
                "--venv",
                str(venv_gunicorn_new),
                "-c",
                "gunicorn.conf.py",
                "app:app",
                "--nginx",
                str(nginx),
                "--format",
                "json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        report = json.loads(result.stdout)
    finally:
        workers = stop(process)

    assert process.returncode is not None
    assert not psutil.pid_exists(process.pid)
    assert len(workers) == 2
    assert [w.pid for w in workers if w.is_running()] == []

    assert_contract(report)
    assert result.returncode == report["exit_code"] == 0
    problems = [
        f for f in report["findings"] if f["severity"] not in ("ok", "info", "skipped")
    ]
    assert problems == []
    assert [n for n in report["notes"] if "static estimate" in n] == []
    config_file = findings_of(report, "config-file")
    assert len(config_file) == 1
    assert config_file[0]["title"] == (
        f"{project / 'gunicorn.conf.py'} loads"
        f" (resolved by gunicorn {GUNICORN_NEW_VERSION})"
    )
    assert report["target"]["chdir"]["value"] == str(project)


def _planted_checks() -> list[str]:
    """Return the check ids of the README's fault table, one per planted fault."""
    readme = (FIXTURES / "ecommerce" / "README.md").read_text()
    table = readme.split("Faults planted on purpose", 1)[1]
    return re.findall(r"^\|.*\| `([a-z-]+)` \|$", table, flags=re.MULTILINE)


def test_ecommerce_faults_match_readme():
    assert sorted(_planted_checks()) == sorted(c for c, _ in ECOMMERCE_FAULTS)


@pytest.fixture(scope="module")
def ecommerce_report() -> tuple[dict, subprocess.CompletedProcess]:
    result = run_doctor(
        "check", "--root", str(FIXTURES / "ecommerce"), "--format", "json"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout), result


@pytest.mark.parametrize(
    ("check", "words"),
    ECOMMERCE_FAULTS,
    ids=[f"{c}-{w[0]}" for c, w in ECOMMERCE_FAULTS],
)
def test_ecommerce_fault_reported(ecommerce_report, check, words):
    report, _ = ecommerce_report
    matching = [
        f
        for f in findings_of(report, check)
        if all(
            word in " ".join([f["title"], f["detail"], *f["evidence"]])
            for word in words
        )
    ]
    assert matching, findings_of(report, check)
    for finding in matching:
        assert finding["severity"] in ("error", "warning"), finding
        assert finding["fix"], finding


def test_ecommerce_report_contract(ecommerce_report):
    report, result = ecommerce_report
    assert_contract(report)
    assert result.returncode == report["exit_code"] == 1
    assert any("static estimate" in note for note in report["notes"])


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--format", "json"],
        ["check", "--format", "plain", "--verbose"],
        ["config", "--format", "json"],
    ],
    ids=["json", "plain-verbose", "config"],
)
def test_ecommerce_secret_never_printed(args):
    result = run_doctor(*args, "--root", str(FIXTURES / "ecommerce"))
    assert result.stdout
    assert SECRET_PLACEHOLDER not in result.stdout
    assert SECRET_PLACEHOLDER not in result.stderr
