"""Truth table of the app-import check, live through the probe and static."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import GUNICORN_OLD_VERSION
from tests.helpers import copy_fixture, findings_of, run_json

FLASK_APP = "from flask import Flask\n\napp = Flask(__name__)\n"
PLAIN_WSGI = (
    "def application(environ, start_response):\n"
    '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
    '    return [b"ok"]\n'
    "\n"
    "\n"
    "def create_app():\n"
    "    return application\n"
)


def write(directory: Path, files: dict[str, str]) -> Path:
    """Create ``directory`` holding ``files`` (relative path to text)."""
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


def check_import(chdir: Path, venv: Path, *args: str):
    """Run only app-import and return its single finding and the process."""
    report, result = run_json(
        "check",
        *args,
        "--chdir",
        str(chdir),
        "--venv",
        str(venv),
        "--select",
        "app-import",
    )
    findings = findings_of(report, "app-import")
    assert len(findings) == 1, findings
    return findings[0], result


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Return a copy of the healthy deployment directory."""
    return copy_fixture("healthy", tmp_path)


# Live import through the probe


@pytest.mark.quiet("app-import")
def test_healthy_fixture_imports(project, venv_gunicorn_new):
    finding, result = check_import(project, venv_gunicorn_new)
    assert finding["severity"] == "ok"
    assert finding["title"] == "app:app imports (flask.app.Flask)"
    assert f"working directory: {project}" in finding["evidence"]
    assert "app: app:app (WSGI callable in app.py)" in finding["evidence"]
    assert result.returncode == 0


@pytest.mark.quiet("app-import")
def test_explicit_app_names_its_source(project, venv_gunicorn_new):
    finding, _ = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "ok"
    assert "app: app:app (APP argument)" in finding["evidence"]


@pytest.mark.fires("app-import")
def test_missing_dependency_listed(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "import redis\n" + FLASK_APP,
            "requirements.txt": "flask\nredis==5.0.1\n",
        },
    )
    finding, result = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == "the app needs module 'redis', which is not installed"
    assert "requirements.txt lists it" in finding["detail"]
    assert finding["fix"] == (
        f"{venv_gunicorn_new}/bin/pip install -r {project}/requirements.txt"
    )
    assert f"{project}/requirements.txt:2: redis==5.0.1" in finding["evidence"]
    assert "  at app.py:1 in <module>" in finding["evidence"]
    assert result.returncode == 1


@pytest.mark.fires("app-import")
def test_missing_dependency_not_listed(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {"app.py": "import redis\n" + FLASK_APP, "requirements.txt": "flask\n"},
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == "the app needs module 'redis', which is not installed"
    assert "nor listed in requirements.txt" in finding["detail"]
    assert finding["fix"].startswith("Add the distribution that provides 'redis'")
    assert not any("requirements.txt:" in line for line in finding["evidence"])


@pytest.mark.fires("app-import")
def test_app_module_in_subdirectory(tmp_path, venv_gunicorn_new):
    project = write(tmp_path / "project", {"src/wsgi.py": FLASK_APP})
    finding, _ = check_import(project, venv_gunicorn_new, "wsgi:app")
    assert finding["severity"] == "error"
    assert finding["title"] == "app module 'wsgi' not found"
    assert "src/wsgi.py" in finding["detail"]
    assert f"--chdir {project}/src" in finding["fix"]
    assert "--pythonpath src" in finding["fix"]


@pytest.mark.fires("app-import")
def test_attribute_not_found_lists_callables(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "from flask import Flask\n\n"
            "web = Flask(__name__)\n\n\n"
            "def create_app():\n"
            "    return Flask(__name__)\n"
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:application")
    assert finding["severity"] == "error"
    assert finding["title"] == "'app' has no attribute 'application'"
    assert "Failed to find attribute 'application' in 'app'." in finding["detail"]
    assert "The module defines: web, create_app." in finding["detail"]
    assert finding["fix"] == "Name an object the module defines, e.g. app:web"


@pytest.mark.fires("app-import")
def test_attribute_not_found_suggests_factory(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "from flask import Flask\n\n\n"
            "def create_app():\n"
            "    return Flask(__name__)\n"
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "error"
    assert finding["fix"] == "Call the factory: app:create_app()"


@pytest.mark.fires("app-import")
def test_object_not_callable(tmp_path, venv_gunicorn_new):
    project = write(tmp_path / "project", {"app.py": 'app = "hello"\n'})
    finding, _ = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == "app:app is not a WSGI callable"
    assert finding["detail"] == "Application object must be callable."
    assert "application object" in finding["fix"]


@pytest.mark.quiet("app-import")
def test_factory_call_imports(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "from flask import Flask\n\n\n"
            "def create_app():\n"
            "    return Flask(__name__)\n"
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:create_app()")
    assert finding["severity"] == "ok"
    assert finding["title"] == "app:create_app() imports (flask.app.Flask)"


@pytest.mark.fires("app-import")
def test_factory_raises(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "def create_app():\n"
            '    raise RuntimeError("DATABASE_URL is not set")\n'
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:create_app()")
    assert finding["severity"] == "error"
    assert finding["title"] == "the app factory in app:create_app() raised an exception"
    assert finding["detail"] == "RuntimeError: DATABASE_URL is not set"
    assert "RuntimeError: DATABASE_URL is not set" in finding["evidence"]
    assert "  at app.py:2 in create_app" in finding["evidence"]


@pytest.mark.fires("app-import")
def test_exception_at_import_time(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "import settings\n" + FLASK_APP,
            "settings.py": "def load():\n"
            '    return {}["SECRET_KEY"]\n'
            "\n"
            "\n"
            "CONFIG = load()\n",
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == "importing 'app' raised KeyError"
    assert finding["detail"] == "KeyError: 'SECRET_KEY'"
    assert "  at app.py:1 in <module>" in finding["evidence"]
    assert "  at settings.py:5 in <module>" in finding["evidence"]
    assert "  at settings.py:2 in load" in finding["evidence"]


@pytest.mark.fires("app-import")
def test_syntax_error_in_app(tmp_path, venv_gunicorn_new):
    project = write(tmp_path / "project", {"app.py": "app = dict(\n"})
    finding, _ = check_import(project, venv_gunicorn_new, "app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == "importing 'app' raised SyntaxError"
    assert "  at app.py:1" in finding["evidence"]


@pytest.mark.fires("app-import")
def test_hanging_import_times_out(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project", {"app.py": "import time\n\ntime.sleep(60)\napp = None\n"}
    )
    started = time.monotonic()
    finding, result = check_import(
        project, venv_gunicorn_new, "app:app", "--probe-timeout", "2"
    )
    elapsed = time.monotonic() - started
    assert finding["severity"] == "error"
    assert finding["title"] == "importing app:app did not finish within 2 s"
    assert "hangs" in finding["detail"]
    assert finding["fix"].startswith("Move connections out of module import time")
    # The probe is killed at its timeout instead of running the 60 s sleep.
    assert elapsed < 30
    assert result.returncode == 1


@pytest.mark.fires("app-import")
def test_attribute_path_rejected(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "app.py": "from flask import Flask\n\n\n"
            "class Holder:\n"
            "    app = Flask(__name__)\n\n\n"
            "obj = Holder()\n"
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new, "app:obj.app")
    assert finding["severity"] == "error"
    assert finding["title"] == "gunicorn rejects the app spec 'app:obj.app'"
    assert "not an attribute path like 'obj.app'" in finding["detail"]
    assert "The object exists (flask.app.Flask)." in finding["detail"]
    assert finding["fix"] == (
        f"Add `application = obj.app` at the end of {project}/app.py and start"
        " gunicorn with app:application"
    )


@pytest.mark.fires("app-import")
@pytest.mark.parametrize("spec", ["app:1x", "app:app(", ":app"])
def test_bad_spec_syntax(project, venv_gunicorn_new, spec):
    finding, result = check_import(project, venv_gunicorn_new, spec)
    assert finding["severity"] == "error"
    assert finding["title"] == f"{spec!r} is not a valid app spec"
    assert finding["fix"].startswith("Write it as MODULE:NAME")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1


@pytest.mark.fires("app-import")
def test_old_gunicorn_rejects_factory_call(tmp_path, venv_gunicorn_old):
    # Gunicorn 20.0.0 looks the whole text after the colon up with getattr;
    # factory calls arrived in 20.0.1.
    project = write(tmp_path / "project", {"app.py": PLAIN_WSGI})
    finding, _ = check_import(project, venv_gunicorn_old, "app:create_app()")
    assert finding["severity"] == "error"
    assert finding["title"] == "gunicorn rejects the app spec 'app:create_app()'"
    assert f"gunicorn {GUNICORN_OLD_VERSION} takes only a name" in finding["detail"]
    assert "20.0.1 or later" in finding["detail"]
    assert finding["fix"].startswith(
        f"{venv_gunicorn_old}/bin/pip install 'gunicorn>=20.0.1'\n"
    )
    assert "application = create_app()" in finding["fix"]
    assert (
        "Failed to find application object 'create_app()' in 'app'"
        in finding["evidence"]
    )


@pytest.mark.quiet("app-import")
def test_old_gunicorn_imports_name(tmp_path, venv_gunicorn_old):
    project = write(tmp_path / "project", {"app.py": PLAIN_WSGI})
    finding, _ = check_import(project, venv_gunicorn_old, "app:application")
    assert finding["severity"] == "ok"
    assert finding["title"] == "app:application imports (builtins.function)"


@pytest.mark.quiet("app-import")
def test_config_environment_reaches_app(tmp_path, venv_gunicorn_new):
    # Gunicorn executes the config file in the master before it imports the
    # app, so a variable the config sets is visible at import time.
    project = write(
        tmp_path / "project",
        {
            "gunicorn.conf.py": 'import os\n\nos.environ["APP_MODE"] = "production"\n',
            "app.py": 'import os\n\nMODE = os.environ["APP_MODE"]\n' + FLASK_APP,
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new)
    assert finding["severity"] == "ok"
    assert finding["title"] == "app:app imports (flask.app.Flask)"


@pytest.mark.fires("app-import")
def test_app_needs_variable_config_omits(tmp_path, venv_gunicorn_new):
    project = write(
        tmp_path / "project",
        {
            "gunicorn.conf.py": 'bind = "127.0.0.1:8000"\n',
            "app.py": 'import os\n\nMODE = os.environ["APP_MODE"]\n' + FLASK_APP,
        },
    )
    finding, _ = check_import(project, venv_gunicorn_new)
    assert finding["severity"] == "error"
    assert finding["title"] == "importing 'app' raised KeyError"
    assert finding["detail"] == "KeyError: 'APP_MODE'"


# Static fallback


def test_static_healthy_is_info(project, venv_gunicorn_new):
    finding, result = check_import(project, venv_gunicorn_new, "--static")
    assert finding["severity"] == "info"
    assert finding["title"] == f"{project}/app.py defines 'app'"
    assert "static mode does not import the app" in finding["detail"]
    app_line = line_of(project / "app.py", "app = Flask(")
    assert finding["location"] == {"path": f"{project}/app.py", "line": app_line}
    assert result.returncode == 0


def test_static_ecommerce_root(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    report, result = run_json("check", "--root", str(root), "--select", "app-import")
    findings = findings_of(report, "app-import")
    titles = [finding["title"] for finding in findings]
    app_py = "/var/www/ecommerce_knowledge/app.py"
    assert [finding["severity"] for finding in findings] == ["error", "error"]
    assert f"{app_py} defines no 'application'" in titles
    assert f"{app_py} imports 'redis', which the venv does not provide" in titles
    missing_object, missing_import = findings
    assert missing_object["fix"] == "Use app:app"
    assert "no working interpreter" in missing_object["evidence"][-1]
    redis_line = line_of(root / app_py.lstrip("/"), "import redis")
    assert missing_import["location"] == {"path": app_py, "line": redis_line}
    assert "requirements.txt lists it" in missing_import["detail"]
    assert result.returncode == 1


def test_static_module_in_subdirectory(tmp_path, venv_gunicorn_new):
    project = write(tmp_path / "project", {"src/wsgi.py": FLASK_APP})
    finding, _ = check_import(project, venv_gunicorn_new, "wsgi:app", "--static")
    assert finding["severity"] == "error"
    assert finding["title"] == "app module 'wsgi' not found"
    assert "It exists at src/wsgi.py." in finding["detail"]
    assert f"{project}/src" in finding["fix"]


def test_static_syntax_error(tmp_path, venv_gunicorn_new):
    project = write(tmp_path / "project", {"app.py": "import os\napp = dict(\n"})
    finding, _ = check_import(project, venv_gunicorn_new, "app:app", "--static")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(f"{project}/app.py cannot be parsed: ")
    assert finding["location"] == {"path": f"{project}/app.py", "line": 2}


def test_static_attribute_path(tmp_path, venv_gunicorn_new):
    project = write(tmp_path / "project", {"app.py": FLASK_APP})
    finding, _ = check_import(
        project, venv_gunicorn_new, "app:app.wsgi_app", "--static"
    )
    assert finding["severity"] == "error"
    assert "rejects the attribute path" in finding["title"]
    assert "application = app.wsgi_app" in finding["fix"]


# Bad input


def test_bad_spec_static(project, venv_gunicorn_new):
    finding, result = check_import(project, venv_gunicorn_new, "app:app(", "--static")
    assert finding["severity"] == "error"
    assert finding["title"].startswith("'app:app(' is not a valid app spec")
    assert "Traceback" not in result.stderr


def test_missing_venv_falls_back_to_static(project, tmp_path):
    venv = tmp_path / "no-such-venv"
    finding, result = check_import(project, venv)
    assert finding["severity"] == "info"
    assert f"the venv {venv} has no working interpreter" in finding["detail"]
    assert "Traceback" not in result.stderr


def test_venv_is_file_falls_back_to_static(project, tmp_path):
    venv = tmp_path / "venv"
    venv.write_text("", encoding="utf-8")
    finding, result = check_import(project, venv)
    assert finding["severity"] == "info"
    assert f"the venv {venv} has no working interpreter" in finding["detail"]
    assert "Traceback" not in result.stderr
