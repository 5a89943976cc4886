"""The command line: commands, exit codes, bad input and the JSON contract."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import FIXTURES, REPO, run_doctor, run_json

FINDING_FIELDS = {
    "check",
    "area",
    "severity",
    "title",
    "detail",
    "fix",
    "evidence",
    "location",
}
AREAS = {
    "venv",
    "import",
    "port",
    "logs",
    "pidfile",
    "upstream",
    "timeouts",
    "workers",
    "systemd",
    "nginx",
    "config",
    "doctor",
}


def test_version():
    result = run_doctor("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("gunicorn-doctor ")


def test_console_script_installed():
    script = REPO / "doctor" / "__main__.py"
    assert script.is_file()
    result = subprocess.run(
        ["gunicorn-doctor", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["list"], ["explain", "venv-interpreter"]]
)
def test_fast_commands_skip_heavy_imports(args):
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['gunicorn-doctor', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('doctor', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('requests', 'psutil', 'crossplane', 'doctor.facts.settings',"
        " 'doctor.probes', 'urllib3') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert "HEAVY []" in result.stderr, result.stderr


def test_list_shows_builtin_checks():
    result = run_doctor("list")
    assert result.returncode == 0
    for check_id in ("venv-interpreter", "app-import", "config-daemon"):
        assert check_id in result.stdout


def test_explain_prints_docs():
    result = run_doctor("explain", "config-unknown-names")
    assert result.returncode == 0
    assert "ignores the rest" in result.stdout


def test_explain_unknown_id():
    result = run_doctor("explain", "no-such-check")
    assert result.returncode == 2
    assert "no-such-check" in result.stderr
    assert "gunicorn-doctor list" in result.stderr


def test_unknown_select_name():
    result = run_doctor(
        "check", "--select", "venv,nosuch", "--root", str(FIXTURES / "ecommerce")
    )
    assert result.returncode == 2
    assert "nosuch" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--chdir", "/nonexistent/dir"],
            "--chdir /nonexistent/dir: no such directory",
        ),
        (
            ["--root", "/nonexistent/root"],
            "--root /nonexistent/root: no such directory",
        ),
        (
            ["--unit", "/nonexistent.service"],
            "--unit /nonexistent.service: no such file",
        ),
        (["--", "-c"], "APP '-c' starts with '-'"),
    ],
)
def test_bad_paths_exit_2(args, needle):
    result = run_doctor("check", *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_root_without_unit(tmp_path):
    result = run_doctor("check", "--root", str(tmp_path))
    assert result.returncode == 2
    assert "no deployment found under the root" in result.stderr


def test_json_contract_on_ecommerce_fixture():
    report, result = run_json("check", "--root", str(FIXTURES / "ecommerce"))
    assert set(report) >= {
        "doctor_version",
        "target",
        "findings",
        "summary",
        "exit_code",
    }
    assert report["exit_code"] == result.returncode == 1
    severities = {"ok", "info", "warning", "error", "skipped"}
    assert set(report["summary"]) >= severities
    assert sum(report["summary"][s] for s in severities) == len(report["findings"])
    for finding in report["findings"]:
        assert set(finding) >= FINDING_FIELDS
        assert finding["area"] in AREAS
        assert finding["severity"] in report["summary"]
        assert isinstance(finding["evidence"], list)
        if finding["location"] is not None:
            assert set(finding["location"]) == {"path", "line"}


def test_fail_on_warning_raises_exit_code():
    _, quiet = run_json(
        "check",
        "--root",
        str(FIXTURES / "ecommerce"),
        "--select",
        "config-unknown-names",
    )
    _, strict = run_json(
        "check",
        "--root",
        str(FIXTURES / "ecommerce"),
        "--select",
        "config-unknown-names",
        "--fail-on",
        "warning",
    )
    assert quiet.returncode == 0
    assert strict.returncode == 1


def test_select_and_ignore_by_area():
    report, _ = run_json(
        "check",
        "--root",
        str(FIXTURES / "ecommerce"),
        "--select",
        "venv",
        "--ignore",
        "venv-requirements",
    )
    checks = {f["check"] for f in report["findings"]}
    assert checks
    assert all(c.startswith("venv-") for c in checks)
    assert "venv-requirements" not in checks


def test_plain_output_without_terminal():
    result = run_doctor("check", "--root", str(FIXTURES / "ecommerce"))
    assert "\x1b[" not in result.stdout
    assert "✗" in result.stdout
    assert "Summary:" in result.stdout


def test_ascii_marks():
    result = run_doctor("check", "--root", str(FIXTURES / "ecommerce"), "--ascii")
    assert "✗" not in result.stdout
    assert "✓" not in result.stdout
    assert "  X " in result.stdout


def test_secrets_removed_from_json():
    report, _ = run_json("check", "--root", str(FIXTURES / "ecommerce"))
    assert "fixture-not-a-real-secret" not in json.dumps(report)


def test_config_command_shows_sources():
    result = run_doctor(
        "config", "--root", str(FIXTURES / "ecommerce"), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["estimated"] is True
    bind = data["settings"]["bind"]
    assert bind["value"] == ["127.0.0.1:5000"]
    assert bind["source"]["path"] == "/var/www/ecommerce_knowledge/gunicorn_config.py"
    assert bind["source"]["line"] == 3
    assert (
        data["settings"]["workers"]["expression"]
        == "multiprocessing.cpu_count() * 2 + 1"
    )


@pytest.mark.parametrize("command", ["check", "triage"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_timeout_not_a_number(command, value):
    result = run_doctor(
        command, "--probe-timeout", value, "--root", str(FIXTURES / "ecommerce")
    )
    assert result.returncode == 2
    assert f"{value} is not a number of seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_deleted_working_directory(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    result = subprocess.run(
        ["sh", "-c", script, "sh", str(gone), sys.executable, "-m", "doctor"]
        + ["check", "--root", str(FIXTURES / "ecommerce")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "the current directory cannot be read" in result.stderr
    assert "Traceback" not in result.stderr
