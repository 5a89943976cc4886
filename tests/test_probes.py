"""Tests for the probe scripts and their runner, against real virtualenvs."""

from __future__ import annotations

import ast
import glob
import marshal
import os
import platform
import py_compile
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from doctor import probes
from doctor.probes import PROBE_NAMES, ProbeResult, probe_script, run_probe
from tests.conftest import make_venv
from tests.helpers import is_gone

pytestmark = pytest.mark.slow

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

PLAIN_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@pytest.fixture(params=["new", "old"])
def gunicorn_venv(request: pytest.FixtureRequest) -> tuple[Path, str]:
    """Return (venv, gunicorn version) for the newest and the oldest Gunicorn."""
    venv = request.getfixturevalue(f"venv_gunicorn_{request.param}")
    return venv, installed_version(venv, "gunicorn")


def installed_version(venv: Path, package: str) -> str:
    """Read a package's version from its dist-info directory name in ``venv``."""
    pattern = str(venv / "lib" / "python*" / "site-packages" / f"{package}-*.dist-info")
    (dist_info,) = glob.glob(pattern)
    return Path(dist_info).name.removesuffix(".dist-info").split("-")[1]


def supports_factories(version: str) -> bool:
    """Tell whether gunicorn ``version`` accepts "module:factory()" specs (20.0.1+)."""
    return tuple(int(part) for part in version.split(".")[:3]) >= (20, 0, 1)


def missing_attribute_message(version: str, name: str, module: str) -> str:
    if supports_factories(version):
        return f"Failed to find attribute {name!r} in {module!r}."
    return f"Failed to find application object {name!r} in {module!r}"


def python_of(venv: Path) -> str:
    return str(venv / "bin" / "python")


def service_env(**extra: str) -> dict[str, str]:
    """Return a small environment like a systemd unit's, plus ``extra``."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def probe(
    venv: Path | str,
    name: str,
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    **kwargs,
) -> ProbeResult:
    python = venv if isinstance(venv, str) else python_of(venv)
    return run_probe(
        python, name, args, cwd=str(cwd), env=env or service_env(), **kwargs
    )


def settings(venv: Path, args: list[str], cwd: Path, **env: str) -> dict:
    result = probe(venv, "settings", args, cwd, service_env(**env))
    assert result.error is None, result.stderr
    assert result.data["probe"] == "settings"
    return result.data


def import_app(venv: Path, spec: str, cwd: Path, pythonpath: str = "") -> dict:
    args = ["--app", spec]
    if pythonpath:
        args += ["--pythonpath", pythonpath]
    result = probe(venv, "import", args, cwd)
    assert result.error is None, result.stderr
    assert result.data["probe"] == "import"
    return result.data


# Settings probe


def test_settings_defaults(gunicorn_venv, tmp_path):
    venv, version = gunicorn_venv
    data = settings(venv, ["app:app"], tmp_path)
    assert data["error"] is None
    assert data["gunicorn_version"] == version
    assert data["python"] == platform.python_version()
    assert data["cwd"] == str(tmp_path)
    assert data["app_uri"] == "app:app"
    assert data["config_file"] is None
    assert data["config_origin"] is None
    assert data["settings"]["workers"] == 1
    assert data["settings"]["bind"] == ["127.0.0.1:8000"]
    assert data["sources"]["workers"] == {"kind": "default", "path": None, "line": None}
    assert data["sources"]["default_proc_name"]["kind"] == "cli"
    assert data["cli_flags"]["bind"] == ["-b", "--bind"]
    assert data["cli_flags"]["on_starting"] == []
    assert "on_starting" in data["non_literal"]
    assert isinstance(data["settings"]["on_starting"], str)
    assert set(data["settings"]) == set(data["sources"])


def test_settings_precedence(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(
        tmp_path,
        "gunicorn_config.py",
        """\
        import multiprocessing

        workers = 2
        timeout = 10
        bind = "127.0.0.1:9000"
        if True:
            keepalive = 7
        def on_starting(server):
            pass
        """,
    )
    data = settings(
        venv,
        ["-c", "gunicorn_config.py", "-w", "4", "app:app"],
        tmp_path,
        GUNICORN_CMD_ARGS="--workers 3 --timeout 20 --graceful-timeout 5",
    )
    assert data["error"] is None
    assert data["config_file"] == str(config)
    assert data["config_origin"] == "cli"
    assert data["settings"]["workers"] == 4
    assert data["sources"]["workers"]["kind"] == "cli"
    assert data["settings"]["timeout"] == 20
    assert data["sources"]["timeout"]["kind"] == "env"
    assert data["settings"]["graceful_timeout"] == 5
    assert data["settings"]["bind"] == ["127.0.0.1:9000"]
    assert data["sources"]["bind"] == {
        "kind": "config",
        "path": str(config),
        "line": 5,
    }
    assert data["sources"]["keepalive"]["line"] == 7
    assert data["sources"]["on_starting"]["line"] == 8
    assert data["sources"]["max_requests"]["kind"] == "default"


def test_settings_config_file_from_env(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(tmp_path, "conf/gunicorn.py", "workers = 6\n")
    data = settings(
        venv, ["app:app"], tmp_path, GUNICORN_CMD_ARGS=f"-c {config} --threads 2"
    )
    assert data["error"] is None
    assert data["config_origin"] == "env"
    assert data["config_file"] == str(config)
    assert data["settings"]["workers"] == 6
    assert data["settings"]["threads"] == 2
    assert data["sources"]["threads"]["kind"] == "env"


def test_settings_default_config_file(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(tmp_path, "gunicorn.conf.py", "timeout = 45\n")
    data = settings(venv, ["app:app"], tmp_path)
    assert data["config_origin"] == "default"
    assert data["config_file"] == str(config)
    assert data["settings"]["timeout"] == 45
    assert data["sources"]["timeout"]["line"] == 1


def test_settings_python_module_config(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(tmp_path, "deploy_settings.py", "workers = 9\n")
    data = settings(venv, ["-c", "python:deploy_settings", "app:app"], tmp_path)
    assert data["error"] is None
    assert data["config_file"] == str(config)
    assert data["config_location"] == "python:deploy_settings"
    assert data["sources"]["workers"] == {
        "kind": "config",
        "path": str(config),
        "line": 1,
    }


def test_settings_syntax_error(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(tmp_path, "broken.py", "workers = 2\nbind = (\n")
    data = settings(venv, ["-c", "broken.py", "app:app"], tmp_path)
    error = data["error"]
    assert error["stage"] == "config"
    assert error["type"] == "SyntaxError"
    assert error["path"] == str(config)
    assert error["line"] == 2
    assert "SyntaxError" in error["traceback"]
    assert data["app_uri"] == "app:app"


def test_settings_config_raises(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(
        tmp_path, "raising.py", "import os\nworkers = int(os.environ['W'])\n"
    )
    data = settings(venv, ["-c", "raising.py", "app:app"], tmp_path)
    error = data["error"]
    assert error["stage"] == "config"
    assert error["type"] == "KeyError"
    assert error["path"] == str(config)
    assert error["line"] == 2
    assert "raising.py" in error["traceback"]


def test_settings_missing_config_file(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    data = settings(venv, ["-c", "nope.py", "app:app"], tmp_path)
    assert data["error"]["stage"] == "config"
    assert data["error"]["message"] == "'nope.py' doesn't exist"
    assert data["error"]["path"] == str(tmp_path / "nope.py")


def test_settings_invalid_value(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    config = write(tmp_path, "conf.py", 'bind = "127.0.0.1:1"\nworkers = "many"\n')
    data = settings(venv, ["-c", "conf.py", "app:app"], tmp_path)
    error = data["error"]
    assert error["stage"] == "settings"
    assert error["setting"] == "workers"
    assert error["value"] == "'many'"
    assert error["path"] == str(config)
    assert error["line"] == 2
    assert "workers" in error["message"]
    assert "'many'" in error["message"]


def test_settings_argv_error(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    data = settings(venv, ["--no-such-flag", "app:app"], tmp_path)
    assert data["error"]["stage"] == "argv"
    assert "unrecognized arguments: --no-such-flag" in data["error"]["message"]


def test_settings_env_args_error(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    data = settings(venv, ["app:app"], tmp_path, GUNICORN_CMD_ARGS="--workers lots")
    assert data["error"]["stage"] == "env"
    assert "--workers" in data["error"]["message"]


def test_settings_no_app_module(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    data = settings(venv, [], tmp_path)
    assert data["app_uri"] is None
    assert data["error"]["stage"] == "argv"
    assert data["error"]["message"] == "No application module specified."


def test_settings_wsgi_app_setting(venv_gunicorn_new, tmp_path):
    write(tmp_path, "gunicorn.conf.py", 'wsgi_app = "site:app"\n')
    data = settings(venv_gunicorn_new, [], tmp_path)
    assert data["error"] is None
    assert data["app_uri"] == "site:app"


def test_settings_unknown_names(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(
        tmp_path,
        "conf.py",
        """\
        import os
        from os.path import join
        workers_count = 4
        WORKERS = 2
        _private = 1
        def helper():
            pass
        class Helper:
            pass
        globals()["dynamic_name"] = 1
        """,
    )
    data = settings(venv, ["-c", "conf.py", "app:app"], tmp_path)
    assert data["error"] is None
    assert data["unknown_names"] == [
        {"name": "workers_count", "line": 3},
        {"name": "WORKERS", "line": 4},
        {"name": "dynamic_name", "line": None},
    ]


def test_settings_sync_with_threads_runs_gthread(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    data = settings(venv, ["--threads", "2", "app:app"], tmp_path)
    assert data["worker_class"] == {
        "configured": "sync",
        "runs": "gunicorn.workers.gthread.ThreadWorker",
        "error": None,
    }


def test_settings_sync_worker_resolved(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    data = settings(venv, ["app:app"], tmp_path)
    assert data["worker_class"]["runs"] == "gunicorn.workers.sync.SyncWorker"
    assert data["worker_class"]["error"] is None


@pytest.mark.parametrize("worker", ["gevent", "eventlet"])
def test_settings_worker_class_not_loadable(gunicorn_venv, tmp_path, worker):
    venv, _ = gunicorn_venv
    write(tmp_path, "conf.py", f'worker_class = "{worker}"\n')
    data = settings(venv, ["-c", "conf.py", "app:app"], tmp_path)
    assert data["error"] is None
    assert data["worker_class"]["configured"] == worker
    assert data["worker_class"]["error"] is not None
    assert f"'{worker}'" in data["worker_class"]["error"]


def test_settings_config_printing_to_stdout(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(
        tmp_path,
        "conf.py",
        """\
        import os
        print("hello from print")
        os.write(1, b"hello from fd 1\\n")
        workers = 3
        """,
    )
    result = probe(venv, "settings", ["-c", "conf.py", "app:app"], tmp_path)
    assert result.error is None
    assert result.data["settings"]["workers"] == 3
    assert "hello from print" in result.stderr
    assert "hello from fd 1" in result.stderr


def test_settings_without_gunicorn(venv_no_gunicorn, tmp_path):
    data = settings(venv_no_gunicorn, ["app:app"], tmp_path)
    assert data["gunicorn_version"] is None
    assert data["error"]["stage"] == "probe"
    assert data["error"]["type"] == "ModuleNotFoundError"
    assert data["settings"] == {}


# Import probe


def test_import_flask_app(venv_gunicorn_new, tmp_path):
    app = write(
        tmp_path,
        "app.py",
        """\
        from flask import Flask
        app = Flask(__name__)
        print("imported")
        """,
    )
    data = import_app(venv_gunicorn_new, "app:app", tmp_path)
    assert data["status"] == "ok"
    assert data["app_type"] == "flask.app.Flask"
    assert data["module_file"] == str(app)
    assert data["gunicorn_version"] == installed_version(venv_gunicorn_new, "gunicorn")
    assert data["exception"] is None


def test_import_plain_app(gunicorn_venv, tmp_path):
    venv, version = gunicorn_venv
    write(tmp_path, "app.py", PLAIN_APP)
    data = import_app(venv, "app:app", tmp_path)
    assert data["status"] == "ok"
    assert data["gunicorn_version"] == version
    assert data["module"] == "app"
    assert data["object"] == "app"


def test_import_bare_module_uses_application(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(tmp_path, "wsgi.py", PLAIN_APP + "application = app\n")
    data = import_app(venv, "wsgi", tmp_path)
    assert data["status"] == "ok"
    assert data["object"] == "application"


def test_import_missing_dependency(venv_gunicorn_old, tmp_path):
    write(tmp_path, "app.py", "from flask import Flask\napp = Flask(__name__)\n")
    data = import_app(venv_gunicorn_old, "app:app", tmp_path)
    assert data["status"] == "import_error"
    assert data["missing_module"] == "flask"
    assert data["message"] == "ModuleNotFoundError: No module named 'flask'"
    assert data["exception"]["type"] == "ModuleNotFoundError"
    assert data["exception"]["frames"] == ["app.py:1 in <module>"]


def test_import_app_module_found_elsewhere(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(tmp_path, "src/myapp/__init__.py", "")
    write(tmp_path, "src/myapp/wsgi.py", PLAIN_APP)
    write(tmp_path, ".venv/lib/myapp/wsgi.py", PLAIN_APP)
    data = import_app(venv, "myapp.wsgi:app", tmp_path)
    assert data["status"] == "module_not_found"
    assert data["missing_module"] == "myapp"
    assert data["found_elsewhere"] == ["src/myapp/wsgi.py"]

    fixed = import_app(venv, "myapp.wsgi:app", tmp_path, pythonpath="src")
    assert fixed["status"] == "ok"
    assert fixed["module_file"] == str(tmp_path / "src/myapp/wsgi.py")


def test_import_attribute_not_found(gunicorn_venv, tmp_path):
    venv, version = gunicorn_venv
    write(
        tmp_path,
        "app.py",
        """\
        import json
        from os.path import join

        def helper(value):
            return value

        def create_app():
            return wsgi

        def wsgi(environ, start_response):
            return []
        """,
    )
    data = import_app(venv, "app:application", tmp_path)
    assert data["status"] == "attribute_not_found"
    assert data["message"] == missing_attribute_message(version, "application", "app")
    assert data["candidates"] == ["wsgi", "create_app", "helper"]


def test_import_not_callable(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(tmp_path, "app.py", PLAIN_APP + "settings = {'debug': True}\n")
    data = import_app(venv, "app:settings", tmp_path)
    assert data["status"] == "not_callable"
    assert data["message"] == "Application object must be callable."
    assert data["candidates"] == ["app"]


def test_import_factory_with_arguments(gunicorn_venv, tmp_path):
    venv, version = gunicorn_venv
    write(
        tmp_path,
        "factory.py",
        PLAIN_APP
        + """\

def create_app(name, debug=False):
    if (name, debug) != ("prod", True):
        raise ValueError("unexpected arguments %r" % ((name, debug),))
    return app
""",
    )
    spec = 'factory:create_app("prod", debug=True)'
    data = import_app(venv, spec, tmp_path)
    if supports_factories(version):
        assert data["status"] == "ok"
        assert data["app_type"] == "builtins.function"
    else:
        assert data["status"] == "gunicorn_rejects_spec"
        assert data["object_exists"] is True
        assert data["message"] == missing_attribute_message(
            version, 'create_app("prod", debug=True)', "factory"
        )


def test_import_factory_wrong_arguments(venv_gunicorn_new, tmp_path):
    write(tmp_path, "factory.py", "def create_app(name):\n    return None\n")
    data = import_app(venv_gunicorn_new, "factory:create_app()", tmp_path)
    assert data["status"] == "factory_failed"
    assert "create_app() missing 1 required positional argument" in data["message"]


def test_import_factory_returns_none(venv_gunicorn_new, tmp_path):
    write(tmp_path, "factory.py", "def create_app():\n    return None\n")
    data = import_app(venv_gunicorn_new, "factory:create_app()", tmp_path)
    assert data["status"] == "factory_failed"
    assert data["message"] == "Failed to find application object: 'create_app()'"


def test_import_factory_raises(venv_gunicorn_new, tmp_path):
    write(
        tmp_path,
        "factory.py",
        """\
        def create_app():
            raise RuntimeError("database unreachable")
        """,
    )
    data = import_app(venv_gunicorn_new, "factory:create_app()", tmp_path)
    assert data["status"] == "factory_failed"
    assert data["message"] == "RuntimeError: database unreachable"
    assert data["exception"]["type"] == "RuntimeError"
    assert data["exception"]["frames"][-1] == "factory.py:2 in create_app"


def test_import_exception_at_import(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(tmp_path, "boom.py", "x = 1\nraise ValueError('boom at import')\n")
    data = import_app(venv, "boom:app", tmp_path)
    assert data["status"] == "import_error"
    assert data["message"] == "ValueError: boom at import"
    assert data["missing_module"] is None
    assert data["module_file"] == str(tmp_path / "boom.py")
    assert data["exception"]["frames"] == ["boom.py:2 in <module>"]
    assert "ValueError: boom at import" in data["exception"]["traceback"]


def test_import_syntax_error(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    write(tmp_path, "app.py", "def app(:\n    pass\n")
    data = import_app(venv, "app:app", tmp_path)
    assert data["status"] == "import_error"
    assert data["exception"]["type"] == "SyntaxError"
    assert data["exception"]["frames"][-1] == "app.py:1"


def test_import_dotted_attribute(gunicorn_venv, tmp_path):
    venv, version = gunicorn_venv
    write(
        tmp_path,
        "app.py",
        PLAIN_APP + "class Holder:\n    pass\nholder = Holder()\nholder.wsgi = app\n",
    )
    data = import_app(venv, "app:holder.wsgi", tmp_path)
    assert data["status"] == "gunicorn_rejects_spec"
    if supports_factories(version):
        assert data["message"] == (
            "Failed to parse 'holder.wsgi' as an attribute name or function call."
        )
    else:
        assert data["message"] == missing_attribute_message(
            version, "holder.wsgi", "app"
        )
    assert data["object_exists"] is True
    assert data["app_type"] == "builtins.function"

    missing = import_app(venv, "app:holder.nothing", tmp_path)
    assert missing["status"] == "gunicorn_rejects_spec"
    assert missing["object_exists"] is False


@pytest.mark.parametrize(
    ("spec", "message", "old_message"),
    [
        (
            "app:",
            "Failed to parse '' as an attribute name or function call.",
            "Failed to find application object '' in 'app'",
        ),
        (
            "app:create(x)",
            "Failed to parse arguments as literal values: 'create(x)'",
            "Failed to find application object 'create(x)' in 'app'",
        ),
        (
            "app.py",
            "ImportError: Failed to find application, did you mean 'app:application'?",
            "ImportError: Failed to find application, did you mean 'app:application'?",
        ),
    ],
)
def test_import_bad_spec(gunicorn_venv, tmp_path, spec, message, old_message):
    venv, version = gunicorn_venv
    write(tmp_path, "app.py", PLAIN_APP)
    data = import_app(venv, spec, tmp_path)
    assert data["status"] == "bad_spec"
    assert data["message"] == (message if supports_factories(version) else old_message)


def test_import_local_module_shadows_package(venv_gunicorn_new, tmp_path):
    flask_file = write(tmp_path, "flask.py", "VERSION = 'local'\n")
    write(tmp_path, "app.py", "from flask import Flask\napp = Flask(__name__)\n")
    data = import_app(venv_gunicorn_new, "app:app", tmp_path)
    assert data["status"] == "import_error"
    assert data["shadowed_by"] == str(flask_file)
    assert data["missing_module"] is None


def test_import_app_module_shadowed_by_stdlib(gunicorn_venv, tmp_path):
    venv, _ = gunicorn_venv
    local = write(tmp_path, "types.py", PLAIN_APP)
    data = import_app(venv, "types:app", tmp_path)
    assert data["status"] == "module_not_importable"
    assert data["module_file"] == str(local)
    assert data["shadowed_by"].endswith("types.py")
    assert data["shadowed_by"] != str(local)


def test_import_package_without_init_loses(venv_gunicorn_new, tmp_path):
    # Flask depends on Jinja2, so a regular "jinja2" package is installed and
    # wins over the local directory, which is only a namespace package.
    local = write(tmp_path, "jinja2/app.py", PLAIN_APP)
    data = import_app(venv_gunicorn_new, "jinja2.app:app", tmp_path)
    assert data["status"] == "module_not_importable"
    assert data["module_file"] == str(local)
    assert "site-packages" in data["shadowed_by"]


def test_import_without_gunicorn(venv_no_gunicorn, tmp_path):
    write(tmp_path, "app.py", "from flask import Flask\napp = Flask(__name__)\n")
    data = import_app(venv_no_gunicorn, "app:app", tmp_path)
    assert data["gunicorn_version"] is None
    assert data["status"] == "ok"
    assert data["app_type"] == "flask.app.Flask"

    missing = import_app(venv_no_gunicorn, "app:nope", tmp_path)
    assert missing["status"] == "attribute_not_found"
    assert missing["message"] == "Failed to find attribute 'nope' in 'app'."


# Venv probe


def test_venv_probe(gunicorn_venv, tmp_path):
    venv, version = gunicorn_venv
    result = probe(venv, "venv", [], tmp_path)
    assert result.error is None
    data = result.data
    assert data["gunicorn_version"] == version
    assert data["gunicorn_import_error"] is None
    assert data["packages"]["gunicorn"] == version
    assert data["executable"] == python_of(venv)
    assert data["prefix"] == str(venv)
    assert data["base_prefix"] != data["prefix"]


def test_venv_probe_without_gunicorn(venv_no_gunicorn, tmp_path):
    # A local "gunicorn" directory must not pass for the real package.
    (tmp_path / "gunicorn").mkdir()
    result = probe(venv_no_gunicorn, "venv", [], tmp_path)
    data = result.data
    assert data["gunicorn_version"] is None
    assert data["gunicorn_import_error"] == (
        "ModuleNotFoundError: No module named 'gunicorn'"
    )
    assert "flask" in data["packages"]
    assert "markupsafe" in data["packages"]


@pytest.fixture(scope="module")
def venv_gunicorn_without_pkg_resources(tmp_path_factory) -> Path:
    """Return a venv with gunicorn 20 but no setuptools, so no pkg_resources."""
    base = tmp_path_factory.mktemp("venv-gunicorn-no-pkg-resources")
    return make_venv(base / "venv", "--no-deps", "gunicorn==20.1.0")


def test_gunicorn_without_pkg_resources(venv_gunicorn_without_pkg_resources, tmp_path):
    venv = venv_gunicorn_without_pkg_resources
    write(tmp_path, "app.py", PLAIN_APP)

    venv_data = probe(venv, "venv", [], tmp_path).data
    assert venv_data["gunicorn_version"] == "20.1.0"
    assert "pkg_resources" in venv_data["gunicorn_import_error"]

    settings_data = settings(venv, ["app:app"], tmp_path)
    assert settings_data["error"]["stage"] == "probe"
    assert "pkg_resources" in settings_data["error"]["message"]

    import_data = import_app(venv, "app:app", tmp_path)
    assert import_data["status"] == "ok"
    assert "pkg_resources" in import_data["gunicorn_error"]


# Runner


def test_probe_timeout_kills_process_group(venv_gunicorn_new, tmp_path):
    pids = tmp_path / "pids"
    write(
        tmp_path,
        "hang.py",
        f"""\
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "300"])
        with open({str(pids)!r}, "w") as handle:
            handle.write("%d %d" % (os.getpid(), child.pid))
        time.sleep(300)
        """,
    )
    result = probe(
        venv_gunicorn_new, "import", ["--app", "hang:app"], tmp_path, timeout=2
    )
    assert result.timed_out is True
    assert result.data is None
    assert result.error.endswith("timed out after 2 s")
    assert python_of(venv_gunicorn_new) in result.error
    probe_pid, sleep_pid = (int(pid) for pid in pids.read_text().split())
    assert is_gone(probe_pid)
    assert is_gone(sleep_pid)


def test_probe_stdout_cap(venv_gunicorn_new, tmp_path):
    result = probe(venv_gunicorn_new, "venv", [], tmp_path, output_cap=256)
    assert result.data is None
    assert result.timed_out is False
    assert result.error.endswith("output exceeded 256 bytes")


def test_probe_stderr_keeps_tail(venv_gunicorn_new, tmp_path):
    write(
        tmp_path,
        "noisy.py",
        """\
        import sys
        for _ in range(3000):
            print("x" * 1000)
        sys.stdout.flush()
        sys.stderr.write("last line\\n")
        app = None
        """,
    )
    cap = 64 * 1024
    result = probe(
        venv_gunicorn_new, "import", ["--app", "noisy:app"], tmp_path, output_cap=cap
    )
    assert result.error is None
    assert result.data["status"] == "not_callable"
    assert result.stderr.startswith("[")
    assert "earlier bytes dropped" in result.stderr
    assert result.stderr.rstrip().endswith("last line")
    assert len(result.stderr.encode()) < cap + 100


def test_missing_interpreter(tmp_path):
    python = str(tmp_path / "venv/bin/python")
    result = run_probe(python, "venv", [], cwd=str(tmp_path), env=service_env())
    assert result.data is None
    assert result.returncode is None
    assert result.error == f"the interpreter {python} does not exist"


def test_dangling_interpreter_symlink(tmp_path):
    link = tmp_path / "python"
    link.symlink_to(tmp_path / "gone/python3.11")
    result = run_probe(str(link), "venv", [], cwd=str(tmp_path), env=service_env())
    assert result.data is None
    assert "dangling symlink" in result.error
    assert str(tmp_path / "gone/python3.11") in result.error


def test_interpreter_not_executable(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o644)
    result = run_probe(str(python), "venv", [], cwd=str(tmp_path), env=service_env())
    assert result.data is None
    assert "permission denied" in result.error
    assert str(python) in result.error


def test_interpreter_exec_format_error(tmp_path):
    python = tmp_path / "python"
    python.write_bytes(b"\x7fELF\x02\x01\x01garbage")
    python.chmod(0o755)
    result = run_probe(str(python), "venv", [], cwd=str(tmp_path), env=service_env())
    assert result.data is None
    assert "exec format error" in result.error


@pytest.mark.parametrize(
    ("output", "reason"),
    [("echo not json", "printed output that is not JSON"), ("true", "printed no JSON")],
)
def test_interpreter_without_json_output(tmp_path, output, reason):
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\n{output}\n")
    python.chmod(0o755)
    result = run_probe(str(python), "venv", [], cwd=str(tmp_path), env=service_env())
    assert result.data is None
    assert result.returncode == 0
    assert reason in result.error


def test_missing_working_directory(venv_gunicorn_new, tmp_path):
    missing = tmp_path / "srv/app"
    result = probe(venv_gunicorn_new, "venv", [], missing)
    assert result.error == f"the working directory {missing} does not exist"


def test_unknown_probe_name(tmp_path):
    with pytest.raises(ValueError, match="unknown probe 'nginx'"):
        run_probe("/usr/bin/python3", "nginx", [], cwd=str(tmp_path), env={})


@pytest.fixture
def private_dir():
    """Yield a directory outside pytest's private tmp tree, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="probe-user-"))
    yield directory
    shutil.rmtree(directory)


def require_root_and_system_python() -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is not installed")


def test_unprivileged_user_cannot_enter_directory(private_dir):
    # The venvs live under pytest's tmp tree, which only root can enter, so
    # the system interpreter is used in place of a service venv here.
    require_root_and_system_python()
    private_dir.chmod(0o700)
    write(private_dir, "app.py", PLAIN_APP)
    result = run_probe(
        SYSTEM_PYTHON,
        "import",
        ["--app", "app:app"],
        cwd=str(private_dir),
        env=service_env(),
        user=NOBODY,
    )
    assert result.data is None
    assert result.returncode == 200
    assert f"cannot enter the working directory {private_dir}" in result.error
    assert "permission denied" in result.error
    assert "nobody" in result.error or str(NOBODY) in result.error


def test_unprivileged_user_cannot_read_app(private_dir):
    require_root_and_system_python()
    private_dir.chmod(0o755)
    app = write(private_dir, "app.py", PLAIN_APP)
    app.chmod(0o600)
    result = run_probe(
        SYSTEM_PYTHON,
        "import",
        ["--app", "app:app"],
        cwd=str(private_dir),
        env=service_env(),
        user=NOBODY,
    )
    assert result.error is None
    assert result.data["status"] == "module_not_importable"
    assert result.data["module_file"] == str(app)
    assert result.data["exception"]["type"] == "PermissionError"

    app.chmod(0o644)
    readable = run_probe(
        SYSTEM_PYTHON,
        "import",
        ["--app", "app:app"],
        cwd=str(private_dir),
        env=service_env(),
        user=NOBODY,
    )
    assert readable.data["status"] == "ok"


# Compatibility of the probe scripts with old and new interpreters


@pytest.mark.parametrize("name", PROBE_NAMES)
def test_probe_script_parses_as_python38(name):
    source = probe_script(name).read_text()
    ast.parse(source, feature_version=(3, 8))


@pytest.mark.parametrize("name", PROBE_NAMES)
def test_probe_script_is_standalone(name):
    tree = ast.parse(probe_script(name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "doctor" not in imported


def other_interpreters() -> list[str]:
    """Find Python 3.8 and 3.13 interpreters installed next to this one."""
    found = []
    for version in ("3.8", "3.13"):
        candidates = [shutil.which(f"python{version}")]
        pattern = os.path.expanduser(
            f"~/.pyenv/versions/{version}.*/bin/python{version}"
        )
        candidates += sorted(glob.glob(pattern))
        for candidate in candidates:
            if candidate and os.access(candidate, os.X_OK) and "shims" not in candidate:
                found.append(candidate)
                break
    return found


@pytest.mark.parametrize("python", other_interpreters())
def test_probes_run_on_other_pythons(python, tmp_path):
    write(tmp_path, "app.py", PLAIN_APP)
    venv = probe(python, "venv", [], tmp_path)
    assert venv.error is None
    assert venv.data["python"].startswith(Path(python).name.removeprefix("python"))

    imported = probe(python, "import", ["--app", "app:app"], tmp_path)
    assert imported.error is None
    assert imported.data["status"] == "ok"

    loaded = probe(python, "settings", ["app:app"], tmp_path)
    assert loaded.error is None
    if loaded.data["gunicorn_version"] is None:
        assert loaded.data["error"]["stage"] == "probe"
    else:
        assert loaded.data["error"] is None


def cached_probe_copy(tmp_path: Path, monkeypatch) -> Path:
    """Copy the probe scripts, with a ``__pycache__`` whose venv probe differs.

    The cached code of the venv probe reports ``"VENV"`` where its source
    contains ``"venv"``; the source keeps its size and modification time, so the
    cache still counts as valid. The runner then uses the copy.
    """
    copy = tmp_path / "probes"
    shutil.copytree(probe_script("venv").parent, copy, ignore=ignore_pycache)
    for script in copy.glob("*.py"):
        py_compile.compile(str(script), doraise=True)
    venv_probe = copy / "venv_probe.py"
    original = venv_probe.read_text()
    edited = original.replace('probe="venv"', 'probe="VENV"')
    assert edited != original
    assert len(edited) == len(original)
    stamp = venv_probe.stat().st_mtime_ns
    venv_probe.write_text(edited)
    os.utime(venv_probe, ns=(stamp, stamp))
    py_compile.compile(str(venv_probe), doraise=True)
    venv_probe.write_text(original)
    os.utime(venv_probe, ns=(stamp, stamp))
    monkeypatch.setattr(probes, "probe_script", lambda name: copy / f"{name}_probe.py")
    return venv_probe


def ignore_pycache(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def run_venv_probe(venv: Path, cwd: Path) -> str:
    python = str(venv / "bin" / "python")
    result = run_probe(python, "venv", [], cwd=str(cwd), env=dict(os.environ))
    assert result.error is None, result.stderr
    return result.data["probe"]


def test_probe_runs_cached_code(venv_gunicorn_new, tmp_path, monkeypatch):
    venv_probe = cached_probe_copy(tmp_path, monkeypatch)

    assert run_venv_probe(venv_gunicorn_new, tmp_path) == "VENV"

    # A source edited after it was compiled makes the cache stale: the target
    # compiles the source instead.
    os.utime(venv_probe, (time.time() + 10, time.time() + 10))
    assert run_venv_probe(venv_gunicorn_new, tmp_path) == "venv"


def test_probe_compiles_source_for_other_magic(
    venv_gunicorn_new, tmp_path, monkeypatch
):
    cached_probe_copy(tmp_path, monkeypatch)
    monkeypatch.setattr(
        probes, "_compiled_code", lambda scripts: b"\0\0\r\n" + marshal.dumps(())
    )

    assert run_venv_probe(venv_gunicorn_new, tmp_path) == "venv"
