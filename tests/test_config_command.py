"""``gunicorn-doctor config``: effective settings and the source of each value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import GUNICORN_NEW_VERSION, GUNICORN_OLD_VERSION
from tests.helpers import run_doctor

APP_SOURCE = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""
CONFIG_SOURCE = """\
import os

workers = 3
timeout = 40
keepalive = 7
bind = os.environ.get("SHOP_BIND", "127.0.0.1:8000")
timout = 120
"""
CONFIG_PATH_LINES = {"workers": 3, "timeout": 4, "keepalive": 5, "bind": 6}
ENV_ARGS = "--timeout 50 --keep-alive 9"
DEFAULT = {"kind": "default", "path": None, "line": None}
FROM_ENV = {"kind": "env", "path": None, "line": None}
FROM_CLI = {"kind": "cli", "path": None, "line": None}
VERSIONS = {
    "venv_gunicorn_new": GUNICORN_NEW_VERSION,
    "venv_gunicorn_old": GUNICORN_OLD_VERSION,
}


@pytest.fixture(params=sorted(VERSIONS))
def venv(request) -> tuple[Path, str]:
    """Return each session venv with the gunicorn version it has."""
    return request.getfixturevalue(request.param), VERSIONS[request.param]


@pytest.fixture
def project(tmp_path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    (directory / "app.py").write_text(APP_SOURCE)
    (directory / "gunicorn.conf.py").write_text(CONFIG_SOURCE)
    return directory


def write_unit(project: Path, launcher: str, exec_args: str, *environment: str):
    unit = project / "shop.service"
    lines = [
        "[Service]",
        f"WorkingDirectory={project}",
        *(f'Environment="{item}"' for item in environment),
        f"ExecStart={launcher} {exec_args}",
    ]
    unit.write_text("\n".join(lines) + "\n")
    return unit


def config_json(*args: str, gunicorn_cmd_args: str = "", status: int = 0) -> dict:
    """Run ``config --format json`` with GUNICORN_CMD_ARGS set as given."""
    result = run_doctor(
        "config",
        *args,
        "--format",
        "json",
        env={"GUNICORN_CMD_ARGS": gunicorn_cmd_args},
    )
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def from_file(project: Path, name: str) -> dict:
    return {
        "kind": "config",
        "path": str(project / "gunicorn.conf.py"),
        "line": CONFIG_PATH_LINES[name],
    }


def test_sources_default_and_file(project, venv):
    path, version = venv
    data = config_json("--chdir", str(project), "--venv", str(path), "app:app")
    settings = data["settings"]
    assert data["gunicorn_version"] == version
    assert data["estimated"] is False
    assert data["error"] is None
    assert data["config_file"] == str(project / "gunicorn.conf.py")
    assert data["app_uri"] == "app:app"
    for name, value in (("workers", 3), ("timeout", 40), ("keepalive", 7)):
        assert settings[name]["value"] == value, name
        assert settings[name]["source"] == from_file(project, name), name
    # gunicorn evaluates the expression and turns the address into a list.
    assert settings["bind"]["value"] == ["127.0.0.1:8000"]
    assert settings["bind"]["source"] == from_file(project, "bind")
    assert "expression" not in settings["bind"]
    assert settings["graceful_timeout"] == {"value": 30, "source": DEFAULT}
    assert settings["default_proc_name"] == {"value": "app:app", "source": FROM_CLI}
    # The typo leaves gunicorn's default in force.
    assert "timout" not in settings
    # wsgi_app is a setting from gunicorn 20.1 on.
    assert ("wsgi_app" in settings) == (version == GUNICORN_NEW_VERSION)


def test_gunicorn_cmd_args_without_unit(project, venv):
    path, _ = venv
    data = config_json(
        "--chdir",
        str(project),
        "--venv",
        str(path),
        "app:app",
        gunicorn_cmd_args=ENV_ARGS,
    )
    settings = data["settings"]
    assert settings["timeout"] == {"value": 50, "source": FROM_ENV}
    assert settings["keepalive"] == {"value": 9, "source": FROM_ENV}
    assert settings["workers"]["source"] == from_file(project, "workers")


def test_precedence_cli_env_file_default(project, venv):
    path, version = venv
    unit = write_unit(
        project,
        str(path / "bin" / "gunicorn"),
        "-c gunicorn.conf.py --timeout 60 app:app",
        f"GUNICORN_CMD_ARGS={ENV_ARGS}",
    )
    # The service does not inherit the doctor's own environment.
    data = config_json("--unit", str(unit), gunicorn_cmd_args="--workers 9")
    settings = data["settings"]
    assert data["gunicorn_version"] == version
    assert settings["timeout"] == {"value": 60, "source": FROM_CLI}
    assert settings["keepalive"] == {"value": 9, "source": FROM_ENV}
    assert settings["workers"] == {"value": 3, "source": from_file(project, "workers")}
    assert settings["graceful_timeout"] == {"value": 30, "source": DEFAULT}


def test_config_file_named_in_gunicorn_cmd_args(tmp_path, venv):
    path, _ = venv
    project = tmp_path / "shop"
    project.mkdir()
    (project / "app.py").write_text(APP_SOURCE)
    (project / "shop_settings.py").write_text("workers = 4\n")
    data = config_json(
        "--chdir",
        str(project),
        "--venv",
        str(path),
        "app:app",
        gunicorn_cmd_args="-c shop_settings.py",
    )
    config = str(project / "shop_settings.py")
    assert data["config_file"] == config
    assert data["settings"]["workers"] == {
        "value": 4,
        "source": {"kind": "config", "path": config, "line": 1},
    }
    assert data["settings"]["config"] == {
        "value": "shop_settings.py",
        "source": FROM_ENV,
    }


def test_error_shows_path_and_line(project, venv):
    path, _ = venv
    (project / "gunicorn.conf.py").write_text("workers = 2\ntimeout = (\n")
    data = config_json(
        "--chdir", str(project), "--venv", str(path), "app:app", status=1
    )
    assert data["error"]["type"] == "SyntaxError"
    assert data["error"]["path"] == str(project / "gunicorn.conf.py")
    assert data["error"]["line"] == 2


def test_static_estimate_marks_and_keeps_expressions(project):
    unit = write_unit(
        project,
        "/usr/local/bin/gunicorn",
        "-c gunicorn.conf.py --timeout 60 app:app",
        f"GUNICORN_CMD_ARGS={ENV_ARGS}",
    )
    data = config_json("--unit", str(unit), "--static")
    settings = data["settings"]
    assert data["estimated"] is True
    assert data["gunicorn_version"] is None
    assert data["estimate_reason"] == "static mode executes nothing from the target"
    assert data["config_file"] == str(project / "gunicorn.conf.py")
    assert settings["bind"] == {
        "value": None,
        "source": from_file(project, "bind"),
        "expression": 'os.environ.get("SHOP_BIND", "127.0.0.1:8000")',
    }
    assert settings["timeout"] == {"value": 60, "source": FROM_CLI}
    assert settings["keepalive"] == {"value": 9, "source": FROM_ENV}
    assert settings["workers"] == {"value": 3, "source": from_file(project, "workers")}
    assert settings["graceful_timeout"] == {"value": 30, "source": DEFAULT}


def test_static_estimate_without_venv(project):
    data = config_json("--chdir", str(project), "app:app")
    assert data["estimated"] is True
    assert data["estimate_reason"].startswith("no virtualenv found")
    assert data["settings"]["workers"]["value"] == 3


def test_plain_output_names_sources(project, venv):
    path, version = venv
    result = run_doctor(
        "config",
        "--chdir",
        str(project),
        "--venv",
        str(path),
        "app:app",
        "--format",
        "plain",
        env={"GUNICORN_CMD_ARGS": ENV_ARGS, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Resolved by gunicorn {version}"
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.strip()}
    assert rows["workers"] == ["workers", "3", f"{project / 'gunicorn.conf.py'}:3"]
    assert rows["timeout"] == ["timeout", "50", "GUNICORN_CMD_ARGS"]
    assert "graceful_timeout" not in rows
    assert "--all shows them" in result.stdout


def test_plain_static_shows_expression(project):
    result = run_doctor(
        "config",
        "--chdir",
        str(project),
        "--static",
        "app:app",
        "--all",
        "--format",
        "plain",
        env={"GUNICORN_CMD_ARGS": "", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Static estimate, not resolved by gunicorn")
    assert "(expression, not evaluated)" in result.stdout
    assert "graceful_timeout" in result.stdout
