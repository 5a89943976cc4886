"""Project configuration and waivers, through the CLI on copies of the fixtures.

The ecommerce copy is examined with --root. Its project directory contains the
planted ``daemon = True`` (config-daemon, an error) and two config warnings.
The healthy copy is examined with --chdir and --static; it has no venv, so
the venv checks report skipped there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import copy_fixture, findings_of, run_doctor, run_json

PROJECT = "var/www/ecommerce_knowledge"
DEPLOYMENT_CONFIG = "/var/www/ecommerce_knowledge/gunicorn_config.py"
DAEMON_WAIVER = """
[[tool.gunicorn-doctor.waivers]]
check = "config-daemon"
reason = "the init script expects a daemon"
"""


@pytest.fixture
def ecommerce(tmp_path) -> Path:
    """Return a copy of the ecommerce tree, to be examined with --root."""
    return copy_fixture("ecommerce", tmp_path)


@pytest.fixture
def healthy(tmp_path) -> Path:
    """Return a copy of the healthy project inside a parent directory."""
    parent = tmp_path / "repo"
    parent.mkdir()
    return copy_fixture("healthy", parent)


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def pyproject(tree: Path, body: str) -> Path:
    return write(tree / PROJECT / "pyproject.toml", '[project]\nname = "shop"\n' + body)


def check_root(tree: Path, *args: str):
    return run_doctor("check", "--root", str(tree), *args)


def check_root_json(tree: Path, *args: str) -> tuple[dict, object]:
    return run_json("check", "--root", str(tree), *args)


def checks_in(report: dict) -> set[str]:
    return {f["check"] for f in report["findings"]}


def areas_in(report: dict) -> set[str]:
    return {f["area"] for f in report["findings"]}


def waiver_findings(report: dict, severity: str) -> list[dict]:
    return [
        f for f in findings_of(report, "doctor-waiver") if f["severity"] == severity
    ]


def error_line(result) -> str:
    """Return stderr, checking that it is the one-line usage error."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gunicorn-doctor: error: ")
    return lines[0]


# Options read from the file


def test_pyproject_options_apply(ecommerce):
    pyproject(
        ecommerce,
        """
[tool.gunicorn-doctor]
select = ["config", "venv"]
ignore = "config-daemon"
fail-on = "warning"
static = true
format = "json"
""",
    )
    result = check_root(ecommerce)
    report = json.loads(result.stdout)  # format = "json" came from the file
    assert areas_in(report) == {"config", "venv"}
    assert "config-daemon" not in checks_in(report)
    assert "config-unknown-names" in checks_in(report)
    reloaded = findings_of(report, "config-reloaded")
    assert [f["severity"] for f in reloaded] == ["skipped"]
    assert "static mode" in reloaded[0]["detail"]
    assert any("static mode executes nothing" in note for note in report["notes"])
    assert result.returncode == 1


def test_dotfile_options_apply(ecommerce):
    write(
        ecommerce / PROJECT / ".gunicorn-doctor.toml",
        """
select = ["config"]
ignore = ["config-daemon", "config-unknown-names"]
fail-on = "error"
format = "json"

[[waivers]]
check = "config-worker-settings"
reason = "gthread is what we want; the sync name is historical"
""",
    )
    result = check_root(ecommerce)
    report = json.loads(result.stdout)
    assert areas_in(report) == {"config"}
    assert checks_in(report) >= {"config-file", "config-worker-settings"}
    assert "config-daemon" not in checks_in(report)
    assert "config-unknown-names" not in checks_in(report)
    (worker,) = findings_of(report, "config-worker-settings")
    assert worker["waiver"]["reason"].startswith("gthread is what we want")
    assert result.returncode == 0, result.stdout


def test_dotfile_wins_over_pyproject_in_one_directory(ecommerce):
    pyproject(ecommerce, '\n[tool.gunicorn-doctor]\nselect = ["venv"]\n')
    write(ecommerce / PROJECT / ".gunicorn-doctor.toml", 'select = ["pidfile"]\n')
    report, _ = check_root_json(ecommerce)
    assert areas_in(report) == {"pidfile"}


def test_select_comma_string(ecommerce):
    pyproject(ecommerce, '\n[tool.gunicorn-doctor]\nselect = "pidfile, logs"\n')
    report, _ = check_root_json(ecommerce)
    assert areas_in(report) == {"pidfile", "logs"}


def test_file_found_from_subdirectory(ecommerce):
    """A file in a parent of the deployment directory applies to it."""
    write(
        ecommerce / "var" / ".gunicorn-doctor.toml",
        'select = ["pidfile"]\nfail-on = "info"\n',
    )
    report, result = check_root_json(ecommerce)
    assert areas_in(report) == {"pidfile"}
    assert result.returncode == 1


def test_pyproject_without_table_is_passed_over(ecommerce):
    write(ecommerce / "var" / "www" / ".gunicorn-doctor.toml", 'select = ["logs"]\n')
    pyproject(ecommerce, "\n[tool.ruff]\nline-length = 100\n")
    report, _ = check_root_json(ecommerce)
    assert areas_in(report) == {"logs"}


def test_healthy_file_found_upward(healthy):
    write(
        healthy.parent / ".gunicorn-doctor.toml",
        'select = ["config", "venv-exists"]\n',
    )
    report, result = run_json("check", "--chdir", str(healthy), "--static")
    assert areas_in(report) == {"config", "venv"}
    assert len(findings_of(report, "venv-exists")) == 1
    assert "venv-interpreter" not in checks_in(report)
    assert result.returncode == 0


# The command line overrides the file


def test_cli_fail_on_overrides_file(ecommerce):
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config"]\nfail-on = "warning"\n'
        + DAEMON_WAIVER,
    )
    _, from_file = check_root_json(ecommerce)
    _, from_cli = check_root_json(ecommerce, "--fail-on", "error")
    assert from_file.returncode == 1  # the config warnings reach fail-on = warning
    assert from_cli.returncode == 0, from_cli.stdout


def test_cli_no_static_overrides_file(ecommerce):
    pyproject(
        ecommerce, '\n[tool.gunicorn-doctor]\nselect = ["config"]\nstatic = true\n'
    )
    static_report, _ = check_root_json(ecommerce)
    live_report, _ = check_root_json(ecommerce, "--no-static")
    static_detail = findings_of(static_report, "config-reloaded")[0]["detail"]
    live_detail = findings_of(live_report, "config-reloaded")[0]["detail"]
    assert "static mode" in static_detail
    assert "static mode" not in live_detail
    assert not any("static mode" in note for note in live_report["notes"])


def test_cli_select_and_format_override_file(ecommerce):
    pyproject(
        ecommerce, '\n[tool.gunicorn-doctor]\nselect = ["venv"]\nformat = "json"\n'
    )
    result = check_root(ecommerce, "--select", "pidfile", "--format", "plain")
    assert result.returncode == 1
    assert not result.stdout.lstrip().startswith("{")
    assert "pidfile" in result.stdout
    assert "venv-" not in result.stdout


def test_exit_zero_despite_errors(ecommerce):
    report, result = check_root_json(ecommerce, "--exit-zero")
    assert report["summary"]["error"] > 0
    assert result.returncode == 0


# Waivers


def test_waiver_covers_error(ecommerce):
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config-daemon"]\n' + DAEMON_WAIVER,
    )
    report, result = check_root_json(ecommerce)
    (daemon,) = findings_of(report, "config-daemon")
    assert daemon["severity"] == "error"
    assert daemon["waiver"]["reason"] == "the init script expects a daemon"
    assert daemon["waiver"]["expires"] is None
    assert daemon["waiver"]["source"].endswith("pyproject.toml:7")
    assert report["summary"]["waived"] == 1
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "pattern",
    [DEPLOYMENT_CONFIG, "/var/www/*/gunicorn_*.py", "/var/www/**/*.py", "/var/www"],
)
def test_waiver_absolute_path_matches(ecommerce, pattern):
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config-daemon"]\n'
        + DAEMON_WAIVER
        + f'path = "{pattern}"\n',
    )
    report, result = check_root_json(ecommerce)
    assert findings_of(report, "config-daemon")[0]["waiver"] is not None
    assert result.returncode == 0


@pytest.mark.parametrize(
    "pattern", ["/var/www/*.py", "/etc/**", "app.py", "/var/www/ecommerce"]
)
def test_waiver_path_mismatch_keeps_error(ecommerce, pattern):
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config-daemon"]\n'
        + DAEMON_WAIVER
        + f'path = "{pattern}"\n',
    )
    report, result = check_root_json(ecommerce)
    (daemon,) = findings_of(report, "config-daemon")
    assert daemon["waiver"] is None
    assert result.returncode == 1
    (unused,) = waiver_findings(report, "info")
    assert "matched no finding" in unused["title"]


def test_waiver_relative_path_under_root(ecommerce):
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config-daemon"]\n'
        + DAEMON_WAIVER
        + 'path = "gunicorn_config.py"\n',
    )
    report, result = check_root_json(ecommerce)
    assert findings_of(report, "config-daemon")[0]["waiver"] is not None
    assert result.returncode == 0


@pytest.mark.parametrize(
    ("pattern", "waived"),
    [
        ("healthy/gunicorn.conf.py", True),
        ("**/gunicorn.conf.py", True),
        ("healthy", True),
        ("healthy/*.py", True),
        ("gunicorn.conf.py", False),
        ("*.py", False),
        ("other/gunicorn.conf.py", False),
    ],
)
def test_waiver_relative_path_from_file_directory(healthy, pattern, waived):
    """A relative path starts at the directory of the file that declares it."""
    config = healthy / "gunicorn.conf.py"
    config.write_text(config.read_text() + "timout = 120\n")
    write(
        healthy.parent / ".gunicorn-doctor.toml",
        f"""
select = ["config-unknown-names"]
fail-on = "warning"

[[waivers]]
check = "config-unknown-names"
reason = "kept for the old deploy script"
path = "{pattern}"
""",
    )
    report, result = run_json("check", "--chdir", str(healthy), "--static")
    (unknown,) = findings_of(report, "config-unknown-names")
    assert unknown["severity"] == "warning"
    assert unknown["location"]["path"] == str(config)
    assert (unknown["waiver"] is not None) is waived
    assert result.returncode == (0 if waived else 1)


def test_expired_waiver_stops_applying(ecommerce):
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config-daemon"]\n'
        + DAEMON_WAIVER
        + "expires = 2020-01-31\n",
    )
    report, result = check_root_json(ecommerce)
    assert findings_of(report, "config-daemon")[0]["waiver"] is None
    (expired,) = waiver_findings(report, "warning")
    assert "config-daemon" in expired["title"]
    assert "2020-01-31" in expired["title"]
    assert expired["location"]["line"] == 7
    assert waiver_findings(report, "info") == []
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("expires", "waived"),
    [
        ("2999-12-31", True),
        ("2999-12-31T23:59:00Z", True),
        ("2999-12-31T08:00:00", True),
        ('"2999-12-31"', True),
        ("2020-01-31T08:00:00+02:00", False),
    ],
)
def test_waiver_expires_forms(ecommerce, expires, waived):
    """TOML dates, date-times and ISO strings all work as expires."""
    pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\nselect = ["config-daemon"]\n'
        + DAEMON_WAIVER
        + f"expires = {expires}\n",
    )
    report, result = check_root_json(ecommerce)
    (daemon,) = findings_of(report, "config-daemon")
    assert (daemon["waiver"] is not None) is waived
    if waived:
        assert daemon["waiver"]["expires"] == "2999-12-31"
    assert result.returncode == (0 if waived else 1)


def test_unused_waiver_reported(ecommerce):
    pyproject(
        ecommerce,
        """
[tool.gunicorn-doctor]
select = ["config"]

[[tool.gunicorn-doctor.waivers]]
check = "config-file"
reason = "the file used to fail to load"
""",
    )
    report, result = check_root_json(ecommerce)
    (unused,) = waiver_findings(report, "info")
    assert "config-file" in unused["title"]
    assert "matched no finding" in unused["title"]
    assert unused["location"]["line"] == 7
    assert result.returncode == 1  # config-daemon still fails the run


def test_waiver_for_unselected_check_is_quiet(ecommerce):
    pyproject(
        ecommerce, '\n[tool.gunicorn-doctor]\nselect = ["pidfile"]\n' + DAEMON_WAIVER
    )
    report, _ = check_root_json(ecommerce)
    assert findings_of(report, "doctor-waiver") == []


def test_waiver_unknown_check_reported(ecommerce):
    pyproject(
        ecommerce,
        """
[tool.gunicorn-doctor]
select = ["config"]

[[tool.gunicorn-doctor.waivers]]
check = "config-deamon"
reason = "typo"
""",
    )
    report, result = check_root_json(ecommerce)
    (unknown,) = waiver_findings(report, "warning")
    assert "config-deamon" in unknown["title"]
    assert "no registered check" in unknown["title"]
    assert "config-daemon" in unknown["fix"]
    assert result.returncode == 1


# Invalid files exit 2 with one line naming the problem


def test_waiver_missing_reason(ecommerce):
    path = pyproject(
        ecommerce,
        '\n[tool.gunicorn-doctor]\n\n[[tool.gunicorn-doctor.waivers]]\ncheck = "config-daemon"\n',
    )
    message = error_line(check_root(ecommerce))
    assert f"{path}:6: waiver #1 (config-daemon)" in message
    assert "reason" in message


def test_invalid_toml(ecommerce):
    path = write(ecommerce / PROJECT / ".gunicorn-doctor.toml", "select = [\n")
    message = error_line(check_root(ecommerce))
    assert str(path) in message
    assert "not valid TOML" in message


def test_unknown_option(ecommerce):
    path = pyproject(ecommerce, '\n[tool.gunicorn-doctor]\nfail_on = "warning"\n')
    message = error_line(check_root(ecommerce))
    assert f"{path}:5: unknown option 'fail_on'" in message
    for known in ("fail-on", "select", "ignore", "static", "format", "waivers"):
        assert known in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('fail-on = "fatal"', "must be one of info, warning, error"),
        ('format = "html"', "must be one of rich, plain, json"),
        ('static = "yes"', "must be true or false"),
        ("check-timeout = 0", "at least 0.1"),
        ("probe-timeout = nan", "at least 0.1"),
        ('lb-idle-timeout = "60s"', "must be a number of seconds"),
        ("select = [1, 2]", "must be a list of check ids or areas"),
        ('ignore = ["config-deamon"]', "unknown check id or area: config-deamon"),
    ],
)
def test_invalid_option_value(ecommerce, line, expected):
    path = pyproject(ecommerce, f"\n[tool.gunicorn-doctor]\n{line}\n")
    message = error_line(check_root(ecommerce))
    assert f"{path}:5:" in message
    assert expected in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('check = "config-daemon"\nreason = "x"\nexpires = "soon"', "is not a date"),
        ('check = "config-daemon"\nreason = "x"\nexpires = 10:00:00', "is not a date"),
        ('check = "config-daemon"\nreason = "x"\npath = 3', "must be a glob"),
        ('check = "config-daemon"\nreason = "x"\nuntil = 2027-01-01', "until"),
        ('reason = "no check named"', 'needs check = "CHECK-ID"'),
        ('check = "config-daemon"\nreason = "  "', "needs reason ="),
    ],
)
def test_invalid_waiver(ecommerce, entry, expected):
    write(ecommerce / PROJECT / ".gunicorn-doctor.toml", f"\n[[waivers]]\n{entry}\n")
    message = error_line(check_root(ecommerce))
    assert ".gunicorn-doctor.toml:1: waiver #1" in message
    assert expected in message


# config --show-tool-config


def show_tool_config(tree: Path, *args: str):
    return run_doctor("config", "--root", str(tree), "--show-tool-config", *args)


def test_show_tool_config_json(ecommerce):
    path = pyproject(
        ecommerce,
        """
[tool.gunicorn-doctor]
fail-on = "warning"
select = "config, venv"

[[tool.gunicorn-doctor.waivers]]
check = "config-daemon"
reason = "the init script expects a daemon"
path = "gunicorn_config.py"
expires = 2999-01-31

[[tool.gunicorn-doctor.waivers]]
check = "venv-interpreter"
reason = "the old image"
expires = 2020-01-31
""",
    )
    result = show_tool_config(ecommerce, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(path)
    options = {row["name"]: row for row in data["options"]}
    assert options["fail-on"] == {
        "name": "fail-on",
        "value": "warning",
        "source": f"{path}:5",
    }
    assert options["select"]["value"] == ["config", "venv"]
    assert options["select"]["source"] == f"{path}:6"
    assert options["static"] == {"name": "static", "value": False, "source": "default"}
    assert options["probe-timeout"]["value"] == 20.0
    first, second = data["waivers"]
    assert first["check"] == "config-daemon"
    assert first["path"] == "gunicorn_config.py"
    assert first["expires"] == "2999-01-31"
    assert first["expired"] is False
    assert first["known_check"] is True
    assert first["source"] == f"{path}:8"
    assert second["expired"] is True
    assert second["path"] is None
    assert second["source"] == f"{path}:14"


def test_show_tool_config_plain(ecommerce):
    path = write(
        ecommerce / PROJECT / ".gunicorn-doctor.toml",
        """
static = true

[[waivers]]
check = "config-deamon"
reason = "typo in the id"
""",
    )
    result = show_tool_config(ecommerce, "--format", "plain")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Project configuration: {path}" in lines
    static = next(line for line in lines if line.strip().startswith("static "))
    assert static.split() == ["static", "true", f"{path}:1"]
    fail_on = next(line for line in lines if line.strip().startswith("fail-on "))
    assert fail_on.split() == ["fail-on", "error", "default"]
    assert "  config-deamon: unknown check" in lines
    assert "    reason   typo in the id" in lines
    assert "    path     (any location)" in lines


def test_show_tool_config_without_file(ecommerce):
    result = show_tool_config(ecommerce, "--format", "json")
    data = json.loads(result.stdout)
    assert data["path"] is None
    assert {row["source"] for row in data["options"]} == {"default"}
    assert data["waivers"] == []


def test_show_tool_config_invalid_file(ecommerce):
    path = pyproject(ecommerce, '\n[tool.gunicorn-doctor]\nfail-on = "sometimes"\n')
    message = error_line(show_tool_config(ecommerce))
    assert f"{path}:5: fail-on = 'sometimes'" in message


def test_expired_waiver_outside_select_is_quiet(ecommerce):
    pyproject(
        ecommerce,
        "\n[[tool.gunicorn-doctor.waivers]]\n"
        'check = "logs-rotation"\nreason = "old"\nexpires = 2020-01-01\n',
    )
    report, result = run_json(
        "check", "--root", str(ecommerce), "--select", "config-unknown-names"
    )
    assert waiver_findings(report, "warning") == []
    assert result.returncode == 0
