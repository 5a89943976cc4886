"""The settings probe that ``check`` starts before typer parses the command line.

The deployments here are real: a venv with gunicorn and an app whose import
leaves a trace in a file. Some tests run the doctor as a subprocess, the way
users run it, so that the early start and its hand-over both happen.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from doctor import headstart
from doctor.cli import app
from doctor.context import Options
from doctor.projectconfig import FORMATS, SEVERITIES
from doctor.target import DiscoveryOptions, discover
from tests.helpers import REPO, findings_of, is_gone, run_doctor, run_json

# An app whose every import appends the importing pid to a file. With a
# delay, the import then sleeps, so that a test can catch the probe running.
APP_SOURCE = """\
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

with open({log!r}, "a") as log:
    log.write(f"{{os.getpid()}}\\n")
time.sleep({delay})


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""


def make_deployment(tmp_path: Path, delay: float = 0) -> tuple[Path, Path]:
    """Write a deployment whose app logs each import; return it and the log."""
    project = tmp_path / "shop"
    project.mkdir()
    log = tmp_path / "imports.log"
    (project / "app.py").write_text(APP_SOURCE.format(log=str(log), delay=delay))
    (project / "gunicorn.conf.py").write_text('bind = "127.0.0.1:8765"\n')
    return project, log


def importing_pids(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(line) for line in log.read_text().split()]


def wait_for_import(log: Path, timeout: float = 30) -> int:
    """Return the pid of the first process that imported the app."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = importing_pids(log)
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no probe imported the app within {timeout} s")


@pytest.fixture(autouse=True)
def nothing_started():
    """Leave no early start behind for the next test."""
    yield
    headstart.discard()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["app:app"], {"app": "app:app"}),
        (
            ["--chdir", "/srv/shop", "-c", "g.py"],
            {"chdir": "/srv/shop", "config": "g.py"},
        ),
        (["--chdir=/srv/shop", "-cg.py"], {"chdir": "/srv/shop", "config": "g.py"}),
        (["--venv", "/v", "--venv", "/w"], {"venv": "/w"}),
        (["--pid", "42", "--probe-timeout", "5"], {"pid": "42", "probe_timeout": "5"}),
        (
            ["--format", "json", "-v", "--exit-zero", "--since", "2h"],
            {"format": "json"},
        ),
        (["-fplain", "--fail-on=warning"], {"format": "plain", "fail_on": "warning"}),
        (["--", "-weird:app"], {"app": "-weird:app"}),
    ],
)
def test_reader_values(args, expected):
    assert headstart.read_arguments(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["--static"],
        ["--no-static"],
        ["--select", "venv"],
        ["--ignore=logs"],
        ["--all"],
        ["--help"],
        ["--unknown"],
        ["-x"],
        ["--chdir"],
        ["--ascii=yes"],
        ["a:app", "b:app"],
    ],
)
def test_reader_declines(args):
    with pytest.raises(headstart.Declined):
        headstart.read_arguments(args)


def test_reader_knows_every_check_option():
    """Each option of ``check`` is listed with the arity typer gives it."""
    command = typer.main.get_command(app).commands["check"]
    for param in command.params:
        if param.param_type_name == "argument":
            continue
        names = [*param.opts, *param.secondary_opts]
        for name in names:
            if param.is_flag:
                listed = name in headstart.FLAG_OPTIONS | headstart.DECLINING_OPTIONS
            else:
                listed = (
                    name in headstart.VALUE_OPTIONS
                    or name in headstart.DECLINING_OPTIONS
                )
            assert listed, f"{name} of check is not known to doctor.headstart"
    choices = {
        param.opts[0]: {str(choice) for choice in param.type.choices}
        for param in command.params
        if hasattr(param.type, "choices")
    }
    assert choices == {"--format": set(FORMATS), "--fail-on": set(SEVERITIES)}


def test_check_imports_app_once(tmp_path, venv_gunicorn_new):
    """Run as users run it, the doctor imports the app in one probe only."""
    project, log = make_deployment(tmp_path)

    report, _ = run_json(
        "check", "--chdir", str(project), "--venv", str(venv_gunicorn_new)
    )

    assert len(importing_pids(log)) == 1
    assert [f["severity"] for f in findings_of(report, "app-import")] == ["ok"]


def test_check_adopts_running_probe(tmp_path, venv_gunicorn_new):
    """The command takes over the probe that imported the app before it ran."""
    project, log = make_deployment(tmp_path, delay=0.5)
    args = ["--chdir", str(project), "--venv", str(venv_gunicorn_new)]
    headstart.begin(args)
    early_pid = wait_for_import(log)

    result = CliRunner().invoke(app, ["check", *args, "--format", "json"])

    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert importing_pids(log) == [early_pid]
    assert [f["severity"] for f in findings_of(report, "app-import")] == ["ok"]


def test_other_options_cancel_early_probe(tmp_path, venv_gunicorn_new):
    project, log = make_deployment(tmp_path, delay=60)
    args = ["--chdir", str(project), "--venv", str(venv_gunicorn_new)]
    headstart.begin(args)
    pid = wait_for_import(log)

    target = discover(DiscoveryOptions(chdir=str(project), venv=str(venv_gunicorn_new)))
    other = Options(probe_timeout=5.0)
    claimed = headstart.claim(
        DiscoveryOptions(chdir=str(project), venv=str(venv_gunicorn_new)), target, other
    )

    assert claimed is None
    assert is_gone(pid, wait=5), "the cancelled probe is still running"


def test_same_options_claim_early_context(tmp_path, venv_gunicorn_new):
    project, _ = make_deployment(tmp_path)
    args = ["--chdir", str(project), "--venv", str(venv_gunicorn_new)]
    headstart.begin(args)

    discovery = DiscoveryOptions(chdir=str(project), venv=str(venv_gunicorn_new))
    claimed = headstart.claim(discovery, discover(discovery), Options())

    assert claimed is not None
    assert claimed.fact("settings").values["bind"] == ["127.0.0.1:8765"]
    assert headstart.claim(discovery, discover(discovery), Options()) is None


def test_usage_error_kills_early_probe(tmp_path, venv_gunicorn_new):
    """A command line that typer rejects leaves no probe running."""
    project, log = make_deployment(tmp_path, delay=60)

    result = run_doctor(
        "check",
        "--chdir",
        str(project),
        "--venv",
        str(venv_gunicorn_new),
        "-f",
        "bogus",
    )
    assert result.returncode == 2
    assert "bogus" in result.stderr

    # A probe that survived the doctor would import the app within this time.
    time.sleep(3)
    for pid in importing_pids(log):
        assert is_gone(pid, wait=5), f"probe pid {pid} outlived the doctor"


def test_project_static_starts_no_probe(tmp_path, venv_gunicorn_new):
    project, log = make_deployment(tmp_path)
    config_marker = tmp_path / "config-executed"
    (project / "gunicorn.conf.py").write_text(
        f"open({str(config_marker)!r}, 'w').close()\nbind = '127.0.0.1:8765'\n"
    )
    (project / ".gunicorn-doctor.toml").write_text("static = true\n")
    args = ["--chdir", str(project), "--venv", str(venv_gunicorn_new)]

    # Nothing claims or cancels what begin starts here, so a probe it started
    # would execute the config file within this time.
    headstart.begin(args)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not config_marker.exists():
        time.sleep(0.05)
    assert not config_marker.exists(), "the config file was executed"

    report, _ = run_json("check", *args)
    assert not config_marker.exists(), "the config file was executed"
    assert importing_pids(log) == []
    assert any("static estimate" in note for note in report["notes"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_check_kills_probe(tmp_path, venv_gunicorn_new, signum):
    """Ending the doctor while its probe imports the app ends the probe too."""
    project, log = make_deployment(tmp_path, delay=60)
    doctor = subprocess.Popen(
        [sys.executable, "-m", "doctor", "check", "--chdir", str(project)]
        + ["--venv", str(venv_gunicorn_new)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        probe_pid = wait_for_import(log)
        # The command has taken the probe over by now: it waits for the probe.
        time.sleep(1)
        doctor.send_signal(signum)
        _, stderr = doctor.communicate(timeout=30)
    finally:
        if doctor.poll() is None:
            doctor.kill()
            doctor.wait()

    assert doctor.returncode == 128 + signum
    assert "Traceback" not in stderr
    assert is_gone(probe_pid, wait=5), "the probe outlived the doctor"


@pytest.mark.parametrize("option", [["-f", "xml"], ["--fail-on", "fatal"]])
def test_invalid_choice_starts_nothing(tmp_path, venv_gunicorn_new, option):
    """A value typer will reject starts no probe, which would run the app."""
    project, log = make_deployment(tmp_path)
    headstart.begin(
        ["--chdir", str(project), "--venv", str(venv_gunicorn_new), *option]
    )

    # A probe started here would import the app within this time.
    time.sleep(3)
    assert importing_pids(log) == []
