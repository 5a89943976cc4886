"""The static reader: argv, GUNICORN_CMD_ARGS and config files, nothing executed."""

import pytest

from doctor.static_settings import (
    ArgvError,
    estimate_settings,
    parse_argv,
    read_config_file,
    replace_app,
)


def test_argv_flags_values_and_positional():
    parsed = parse_argv(
        [
            "-c",
            "conf.py",
            "-w4",
            "--bind=127.0.0.1:1",
            "-b",
            "[::1]:2",
            "--preload",
            "app:app",
        ]
    )
    assert parsed.values["config"] == "conf.py"
    assert parsed.values["workers"] == 4
    assert parsed.values["bind"] == ["127.0.0.1:1", "[::1]:2"]
    assert parsed.values["preload_app"] is True
    assert parsed.positional == ["app:app"]


def test_argv_unknown_flag_rejected():
    with pytest.raises(ArgvError, match="--wokers"):
        parse_argv(["--wokers", "3"])


def test_argv_flag_missing_value():
    with pytest.raises(ArgvError, match="expects a value"):
        parse_argv(["-b"])


def test_replace_app_keeps_options():
    assert replace_app(["-c", "g.py", "app:app", "-D"], "wsgi:application") == [
        "-c",
        "g.py",
        "-D",
        "wsgi:application",
    ]


def test_config_literals_lines_and_expressions(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "import multiprocessing\n"
        "bind = '127.0.0.1:5000'\n"
        "workers = multiprocessing.cpu_count() * 2 + 1\n"
        "timout = 120\n"
        "_helper = 3\n"
        "def on_starting(server):\n"
        "    pass\n"
    )
    read = read_config_file(config, "gunicorn.conf.py")
    assert read.error is None
    assert read.values["bind"] == "127.0.0.1:5000"
    assert read.lines["bind"] == 2
    assert read.non_literal["workers"] == "multiprocessing.cpu_count() * 2 + 1"
    assert read.unknown == [("timout", 4)]
    assert "on_starting" in read.values


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"bind = '127.0.0.1:1'\nworkers = (\n", "SyntaxError"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "BinaryFile"),
        (b"bind = '\xff\xfe'\n", "UnicodeDecodeError"),
    ],
)
def test_config_bad_content(tmp_path, content, kind):
    config = tmp_path / "gunicorn.conf.py"
    config.write_bytes(content)
    read = read_config_file(config, "gunicorn.conf.py")
    assert read.error["type"] == kind
    assert read.error["path"] == "gunicorn.conf.py"


def test_config_syntax_error_line(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("bind = '127.0.0.1:1'\nworkers = = 3\n")
    assert read_config_file(config, "c.py").error["line"] == 2


def test_config_missing_file(tmp_path):
    read = read_config_file(tmp_path / "nope.py", "nope.py")
    assert read.error["type"] == "FileNotFoundError"
    assert "nope.py does not exist" in read.error["message"]


def test_precedence_cli_over_env_over_file(tmp_path):
    config = tmp_path / "g.py"
    config.write_text("workers = 2\ntimeout = 10\nkeepalive = 7\n")
    settings = estimate_settings(
        ["-w", "5", "app:app"],
        env_args="--workers 3 --timeout 20",
        config_host_path=config,
        config_display_path="g.py",
        config_origin="cli",
    )
    assert settings.get("workers") == 5
    assert str(settings.source("workers")) == "command line"
    assert settings.get("timeout") == 20
    assert str(settings.source("timeout")) == "GUNICORN_CMD_ARGS"
    assert settings.get("keepalive") == 7
    assert str(settings.source("keepalive")) == "g.py:3"
    assert settings.get("graceful_timeout") == 30
    assert str(settings.source("graceful_timeout")) == "default"
    assert settings.app_uri == "app:app"
    assert settings.estimated


def test_sync_with_threads_runs_gthread(tmp_path):
    config = tmp_path / "g.py"
    config.write_text("worker_class = 'sync'\nthreads = 2\n")
    settings = estimate_settings(
        [],
        env_args=None,
        config_host_path=config,
        config_display_path="g.py",
        config_origin="cli",
    )
    assert settings.worker_class_runs == "gthread"
