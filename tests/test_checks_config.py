"""Truth tables of the config checks, run through the CLI.

Each scenario runs against the real gunicorn of both session venvs (27.0.1
and 20.0.0, whose settings differ) and, where the check works without
executing the config file, against the static estimate (``--static``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import GUNICORN_NEW_VERSION, GUNICORN_OLD_VERSION
from tests.helpers import findings_of, run_json

# A plain WSGI callable: the old venv has no Flask.
APP_SOURCE = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""
# The runner's own GUNICORN_CMD_ARGS must not leak into the service's argv.
CLEAN_ENV = {"GUNICORN_CMD_ARGS": ""}
# Static mode never runs the launcher, so it need not exist.
STATIC_LAUNCHER = "/usr/local/bin/gunicorn"


@dataclass(frozen=True)
class Mode:
    """How the doctor gets the settings: a venv's gunicorn, or the static reader."""

    name: str
    venv: Path | None
    version: str | None

    @property
    def static(self) -> bool:
        return self.venv is None

    @property
    def launcher(self) -> str:
        return STATIC_LAUNCHER if self.static else str(self.venv / "bin" / "gunicorn")

    @property
    def unit_args(self) -> list[str]:
        return ["--static"] if self.static else []

    @property
    def args(self) -> list[str]:
        return self.unit_args if self.static else ["--venv", str(self.venv)]


def _mode(request: pytest.FixtureRequest, name: str) -> Mode:
    if name == "static":
        return Mode(name, None, None)
    if name == "gunicorn-27":
        venv = request.getfixturevalue("venv_gunicorn_new")
        return Mode(name, venv, GUNICORN_NEW_VERSION)
    venv = request.getfixturevalue("venv_gunicorn_old")
    return Mode(name, venv, GUNICORN_OLD_VERSION)


@pytest.fixture(params=["gunicorn-27", "gunicorn-20", "static"])
def mode(request) -> Mode:
    """Each way of resolving settings: both real gunicorns, then the estimate."""
    return _mode(request, request.param)


@pytest.fixture(params=["gunicorn-27", "gunicorn-20"])
def live(request) -> Mode:
    """Each real gunicorn, for checks that need the config file executed."""
    return _mode(request, request.param)


def make_project(tmp_path: Path, config: str | bytes | None) -> Path:
    """Write ``app.py`` and, unless ``config`` is None, ``gunicorn.conf.py``."""
    project = tmp_path / "shop"
    project.mkdir()
    (project / "app.py").write_text(APP_SOURCE)
    if isinstance(config, bytes):
        (project / "gunicorn.conf.py").write_bytes(config)
    elif config is not None:
        (project / "gunicorn.conf.py").write_text(config)
    return project


def write_unit(
    project: Path, mode: Mode, exec_args: str, environment: tuple[str, ...] = ()
) -> tuple[Path, int]:
    """Write a unit that runs gunicorn in ``project``; return it and ExecStart's line."""
    lines = [
        "[Unit]",
        "Description=shop test service",
        "",
        "[Service]",
        f"WorkingDirectory={project}",
        *(f'Environment="{item}"' for item in environment),
        f"ExecStart={mode.launcher} {exec_args}",
        "Restart=always",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    unit = project / "shop.service"
    unit.write_text("\n".join(lines) + "\n")
    return unit, len(lines) - 4


def check_project(project: Path, mode: Mode, config: str = "gunicorn.conf.py"):
    """Run the config checks on ``project`` without a unit; return the report."""
    report, result = run_json(
        "check",
        "--chdir",
        str(project),
        *mode.args,
        "-c",
        config,
        "app:app",
        "--select",
        "config",
        env=CLEAN_ENV,
    )
    assert report["exit_code"] == result.returncode
    return report


def check_unit(unit: Path, mode: Mode):
    """Run the config checks on the service ``unit``; return the report."""
    report, result = run_json(
        "check", "--unit", str(unit), *mode.unit_args, "--select", "config"
    )
    assert report["exit_code"] == result.returncode
    return report


def only(report: dict, check: str) -> dict:
    """Return the single finding of ``check``, failing if there are more or none."""
    found = findings_of(report, check)
    assert len(found) == 1, found
    return found[0]


def text_of(finding: dict) -> str:
    return " ".join(
        [
            finding["title"],
            finding["detail"],
            finding["fix"] or "",
            *finding["evidence"],
        ]
    )


def assert_resolved_by(report: dict, mode: Mode) -> None:
    """Assert the settings came from the mode's gunicorn, or were estimated."""
    estimated = [note for note in report["notes"] if "static estimate" in note]
    if mode.static:
        assert estimated, report["notes"]
    else:
        assert estimated == []


def assert_rest_skipped(report: dict, checks: tuple[str, ...]) -> None:
    """Assert ``checks`` skip instead of judging a configuration that never loaded."""
    for check in checks:
        finding = only(report, check)
        assert finding["severity"] == "skipped", finding


# config-file


@pytest.mark.fires("config-file")
def test_syntax_error_has_file_and_line(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\n\ntimeout = 30 +\n")
    report = check_project(project, mode)
    finding = only(report, "config-file")
    assert finding["severity"] == "error"
    assert "syntax error at line 3" in finding["title"]
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": 3,
    }
    assert "py_compile" in finding["fix"]
    assert report["exit_code"] == 1
    assert_resolved_by(report, mode)
    assert_rest_skipped(
        report,
        (
            "config-unknown-names",
            "config-worker-settings",
            "config-worker-class",
            "config-daemon",
        ),
    )


@pytest.mark.fires("config-file")
@pytest.mark.parametrize(
    ("config", "line", "kind"),
    [
        ("workers = 2\nimport os\n\nraise RuntimeError('boom')\n", 4, "RuntimeError"),
        (
            (
                "import os\n\n\ndef database_url():\n"
                "    return os.environ['SHOP_DATABASE_URL']\n\n\n"
                "raw_env = ['DATABASE_URL=' + database_url()]\n"
            ),
            5,
            "KeyError",
        ),
    ],
    ids=["module-level", "in-function"],
)
def test_raise_at_exec_has_line_of_raise(tmp_path, live, config, line, kind):
    project = make_project(tmp_path, config)
    report = check_project(project, live)
    finding = only(report, "config-file")
    assert finding["severity"] == "error"
    assert f"raised {kind}" in finding["title"]
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": line,
    }
    assert finding["fix"]
    assert_rest_skipped(report, ("config-unknown-names", "config-daemon"))


def test_raise_at_exec_invisible_to_static(tmp_path):
    project = make_project(tmp_path, "workers = 2\nraise RuntimeError('boom')\n")
    report = check_project(project, Mode("static", None, None))
    finding = only(report, "config-file")
    # The static reader never executes the file, and the title states that.
    assert finding["severity"] == "ok"
    assert "static estimate" in finding["title"]


@pytest.mark.fires("config-file")
def test_binary_config_file(tmp_path, mode):
    project = make_project(tmp_path, b"\x7fELF\x02\x01\x01\x00\x00\x00binary\n")
    report = check_project(project, mode)
    finding = only(report, "config-file")
    config = str(project / "gunicorn.conf.py")
    assert finding["severity"] == "error"
    assert "is not a Python source file" in finding["title"]
    assert "<probe>" not in text_of(finding)
    assert finding["location"]["path"] == config
    assert finding["fix"] == f"Restore {config} from version control."


@pytest.mark.fires("config-file")
def test_missing_config_file(tmp_path, mode):
    project = make_project(tmp_path, None)
    report = check_project(project, mode, config="missing.py")
    finding = only(report, "config-file")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"the config file {project / 'missing.py'} does not exist"
    )
    assert "via -c on the command line" in finding["detail"]
    assert "-c" in finding["fix"]
    # Without a unit there is no ExecStart line to point at.
    assert finding["location"] is None
    assert_rest_skipped(report, ("config-unknown-names", "config-daemon"))


@pytest.mark.fires("config-file")
def test_missing_config_file_points_at_exec_start(tmp_path, mode):
    project = make_project(tmp_path, None)
    unit, exec_line = write_unit(project, mode, "-c missing.py app:app")
    report = check_unit(unit, mode)
    finding = only(report, "config-file")
    assert finding["severity"] == "error"
    assert "does not exist" in finding["title"]
    assert finding["location"] == {"path": str(unit), "line": exec_line}


@pytest.mark.fires("config-file")
@pytest.mark.parametrize(
    ("config", "setting", "value"),
    [
        ('bind = "127.0.0.1:8000"\nworkers = "many"\n', "workers", "'many'"),
        ('bind = "127.0.0.1:8000"\ndaemon = "yes"\n', "daemon", "'yes'"),
    ],
    ids=["workers-many", "daemon-yes"],
)
def test_invalid_value(tmp_path, mode, config, setting, value):
    project = make_project(tmp_path, config)
    report = check_project(project, mode)
    finding = only(report, "config-file")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(
        f"gunicorn rejects a setting: Invalid value for {setting}: {value}"
    )
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": 2,
    }
    assert "type gunicorn expects" in finding["fix"]
    assert report["exit_code"] == 1
    assert_rest_skipped(report, ("config-worker-settings", "config-daemon"))


@pytest.mark.fires("config-file")
def test_unknown_flag_in_exec_start(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\n")
    unit, exec_line = write_unit(
        project, mode, "--bogus-flag -c gunicorn.conf.py app:app"
    )
    report = check_unit(unit, mode)
    finding = only(report, "config-file")
    assert finding["severity"] == "error"
    assert finding["title"] == "gunicorn rejects its command line"
    assert "--bogus-flag" in finding["detail"]
    assert "argv: --bogus-flag -c gunicorn.conf.py app:app" in finding["evidence"]
    assert finding["location"] == {"path": str(unit), "line": exec_line}
    assert "ExecStart" in finding["fix"]
    assert_rest_skipped(report, ("config-unknown-names", "config-daemon"))


@pytest.mark.quiet("config-file")
def test_clean_config_loads(tmp_path, mode):
    project = make_project(tmp_path, 'bind = "127.0.0.1:8000"\nworkers = 2\n')
    report = check_project(project, mode)
    finding = only(report, "config-file")
    assert finding["severity"] == "ok"
    config = project / "gunicorn.conf.py"
    if mode.static:
        assert finding["title"].startswith(f"{config} loads (static estimate: ")
    else:
        assert finding["title"] == (
            f"{config} loads (resolved by gunicorn {mode.version})"
        )
    assert report["exit_code"] == 0
    assert_resolved_by(report, mode)


# config-unknown-names

TYPO_CONFIG = """\
import os

_port = 8000
bind = f"127.0.0.1:{_port}"
timout = 120
worker = 3
TIMEOUT = 5
colour_output = True


def on_starting(server):
    server.log.info("starting")
"""


@pytest.mark.fires("config-unknown-names")
def test_typos_suggest_the_setting(tmp_path, mode):
    project = make_project(tmp_path, TYPO_CONFIG)
    report = check_project(project, mode)
    found = {f["title"]: f for f in findings_of(report, "config-unknown-names")}
    timout = "'timout' is not a gunicorn setting; did you mean 'timeout'?"
    worker = "'worker' is not a gunicorn setting; did you mean 'workers'?"
    upper = "'TIMEOUT' is not a gunicorn setting; did you mean 'timeout'?"
    colour = "'colour_output' is not a gunicorn setting and is ignored"
    expected_lines = {timout: 5, worker: 6, upper: 7, colour: 8}
    assert sorted(found) == sorted(expected_lines)
    config = str(project / "gunicorn.conf.py")
    for title, line in expected_lines.items():
        assert found[title]["severity"] == "warning"
        assert found[title]["location"] == {"path": config, "line": line}
    assert found[worker]["fix"] == "Rename it: workers = ... (did you mean 'workers'?)"
    assert found[colour]["fix"].startswith("Remove it")
    if mode.static:
        assert "newest this doctor knows" in found[timout]["detail"]
    else:
        expected = f"gunicorn {mode.version} has no setting named 'timout'"
        assert found[timout]["detail"].startswith(expected)
    # Warnings alone do not fail the default --fail-on error.
    assert report["exit_code"] == 0


@pytest.mark.fires("config-unknown-names")
@pytest.mark.quiet("config-unknown-names")
def test_wsgi_app_depends_on_version(tmp_path, mode):
    project = make_project(tmp_path, 'wsgi_app = "app:app"\nworkers = 2\n')
    report = check_project(project, mode)
    finding = only(report, "config-unknown-names")
    if mode.version == GUNICORN_OLD_VERSION:
        # wsgi_app arrived in gunicorn 20.1, so 20.0 ignores it.
        assert finding["severity"] == "warning"
        assert finding["title"] == (
            "'wsgi_app' is not a gunicorn setting and is ignored"
        )
        assert finding["location"]["line"] == 1
    else:
        assert finding["severity"] == "ok"


@pytest.mark.quiet("config-unknown-names")
def test_clean_config_has_no_unknown_names(tmp_path, mode):
    config = TYPO_CONFIG.replace("timout", "timeout").replace("worker =", "workers =")
    config = config.replace("TIMEOUT", "_TIMEOUT").replace("colour_output", "_colour")
    project = make_project(tmp_path, config)
    report = check_project(project, mode)
    finding = only(report, "config-unknown-names")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        f"every setting name in {project / 'gunicorn.conf.py'} is known to gunicorn"
    )


# config-worker-settings and config-worker-class


@pytest.mark.fires("config-worker-settings")
def test_sync_with_threads_runs_gthread(tmp_path, mode):
    project = make_project(tmp_path, 'worker_class = "sync"\nthreads = 2\n')
    report = check_project(project, mode)
    finding = only(report, "config-worker-settings")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        "worker_class is 'sync' but threads = 2: gunicorn runs gthread workers"
    )
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": 2,
    }
    assert 'worker_class = "gthread"' in finding["fix"]
    if not mode.static:
        loaded = only(report, "config-worker-class")
        assert loaded["severity"] == "ok"
        assert loaded["title"] == (
            f"worker class gthread loads in gunicorn {mode.version}"
        )


@pytest.mark.fires("config-worker-settings")
def test_sync_ignores_keepalive_and_connections(tmp_path, mode):
    project = make_project(
        tmp_path,
        'worker_class = "sync"\nthreads = 1\nkeepalive = 5\nworker_connections = 500\n',
    )
    report = check_project(project, mode)
    found = {f["title"]: f for f in findings_of(report, "config-worker-settings")}
    assert sorted(found) == [
        "keepalive = 5 is ignored by sync workers",
        "worker_connections = 500 is ignored by sync workers",
    ]
    assert found["keepalive = 5 is ignored by sync workers"]["severity"] == "info"
    assert found["keepalive = 5 is ignored by sync workers"]["location"]["line"] == 3
    connections = found["worker_connections = 500 is ignored by sync workers"]
    assert connections["severity"] == "info"
    assert connections["location"]["line"] == 4
    assert "worker class that runs: sync" in connections["evidence"]


@pytest.mark.fires("config-worker-settings")
@pytest.mark.fires("config-worker-class")
def test_gevent_threads_and_missing_gevent(tmp_path, mode):
    project = make_project(tmp_path, 'worker_class = "gevent"\nthreads = 4\n')
    report = check_project(project, mode)
    finding = only(report, "config-worker-settings")
    assert finding["severity"] == "warning"
    assert finding["title"] == "threads = 4 is ignored by gevent workers"
    assert finding["location"]["line"] == 2
    loaded = only(report, "config-worker-class")
    if mode.static:
        assert loaded["severity"] == "skipped"
        return
    assert loaded["severity"] == "error"
    assert loaded["title"] == (
        f"gunicorn {mode.version} cannot load worker class 'gevent'"
    )
    assert "gevent" in loaded["detail"]
    assert loaded["fix"].endswith("pip install gevent")
    assert loaded["location"]["line"] == 1
    assert report["exit_code"] == 1


@pytest.mark.fires("config-worker-class")
def test_eventlet_worker(tmp_path, live):
    project = make_project(tmp_path, 'worker_class = "eventlet"\n')
    report = check_project(project, live)
    finding = only(report, "config-worker-class")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"gunicorn {live.version} cannot load worker class 'eventlet'"
    )
    if live.version == GUNICORN_NEW_VERSION:
        # gunicorn 26.0 removed the eventlet worker.
        assert finding["fix"].startswith(
            f"gunicorn {live.version} has no eventlet worker"
        )
        assert "gunicorn<26" in finding["fix"]
    else:
        # gunicorn 20 has the worker, but the venv has no eventlet.
        assert "eventlet" in finding["detail"]
        assert finding["fix"].endswith("pip install eventlet")


@pytest.mark.quiet("config-worker-settings")
@pytest.mark.quiet("config-worker-class")
def test_gthread_settings_fit(tmp_path, mode):
    project = make_project(
        tmp_path,
        'worker_class = "gthread"\nthreads = 4\nkeepalive = 5\n'
        "worker_connections = 100\n",
    )
    report = check_project(project, mode)
    finding = only(report, "config-worker-settings")
    assert finding["severity"] == "ok"
    assert finding["title"].startswith("settings fit the gthread worker class")
    loaded = only(report, "config-worker-class")
    if mode.static:
        assert loaded["severity"] == "skipped"
        assert "static" in loaded["detail"]
    else:
        assert loaded["severity"] == "ok"
        assert loaded["title"] == (
            f"worker class gthread loads in gunicorn {mode.version}"
        )


# config-daemon


@pytest.mark.fires("config-daemon")
def test_daemon_in_config_under_systemd(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\ndaemon = True\n")
    unit, _ = write_unit(project, mode, "-c gunicorn.conf.py app:app")
    report = check_unit(unit, mode)
    finding = only(report, "config-daemon")
    assert finding["severity"] == "error"
    assert finding["title"] == "daemon mode is on while systemd starts gunicorn"
    assert str(unit) in finding["detail"]
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": 2,
    }
    assert finding["fix"] == "daemon = False in the config file"
    assert report["exit_code"] == 1
    assert_resolved_by(report, mode)


@pytest.mark.fires("config-daemon")
def test_daemon_flag_in_exec_start(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\n")
    unit, exec_line = write_unit(project, mode, "-D -c gunicorn.conf.py app:app")
    report = check_unit(unit, mode)
    finding = only(report, "config-daemon")
    assert finding["severity"] == "error"
    assert finding["location"] == {"path": str(unit), "line": exec_line}
    assert finding["fix"] == "Remove -D/--daemon from ExecStart"
    assert "daemon = True (command line)" in finding["evidence"]


@pytest.mark.fires("config-daemon")
def test_daemon_without_unit_warns(tmp_path, mode):
    project = make_project(tmp_path, "daemon = True\n")
    report = check_project(project, mode)
    finding = only(report, "config-daemon")
    assert finding["severity"] == "warning"
    assert finding["title"] == "daemon mode is on"
    assert finding["location"]["line"] == 1
    assert report["exit_code"] == 0


@pytest.mark.quiet("config-daemon")
def test_daemon_off_under_systemd(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\ndaemon = False\n")
    unit, _ = write_unit(project, mode, "-c gunicorn.conf.py app:app")
    report = check_unit(unit, mode)
    finding = only(report, "config-daemon")
    assert finding["severity"] == "ok"
    assert report["exit_code"] == 0
