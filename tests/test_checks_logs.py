"""The logs checks against real directories, users, filesystems and gunicorns.

Deployments live in world-searchable temporary directories, because pytest's
own are mode 0700 and the settings probe runs as the unit's User=. The venv
those deployments use is built from the system Python for the same reason:
uid 65534 cannot reach the test runner's interpreter under /root. systemd
does not run here, so unit files are plain files passed with --unit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from doctor.facts.logfiles import (
    RotateScript,
    find_signal_commands,
    glob_covers,
    read_logrotate,
)
from doctor.rootfs import RootFS
from tests.conftest import GUNICORN_NEW_VERSION
from tests.helpers import copy_fixture, findings_of, run_json
from tests.servers import Gunicorn, free_port, wait_for_port

NOBODY = 65534
OTHER_UID = 12345
SYSTEM_PYTHON = "/usr/bin/python3"

APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@pytest.fixture(scope="module")
def nobody_venv():
    """Return a venv with gunicorn that uid 65534 can run."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is not installed")
    base = Path(tempfile.mkdtemp(prefix="logs-venv-"))
    base.chmod(0o755)
    venv = base / "venv"
    subprocess.run(
        [SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"gunicorn=={GUNICORN_NEW_VERSION}",
        ],
        check=True,
    )
    yield venv
    shutil.rmtree(base)


@pytest.fixture
def shared_dir():
    directory = Path(tempfile.mkdtemp(prefix="logs-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def write_deployment(
    directory: Path,
    venv: Path,
    config: str | None,
    *,
    user: str | None = None,
    service: str = "",
) -> Path:
    """Write app.py, gunicorn.conf.py and shop.service; return the unit's path."""
    (directory / "app.py").write_text(APP)
    argv = "app:app"
    if config is not None:
        (directory / "gunicorn.conf.py").write_text(textwrap.dedent(config))
        argv = "-c gunicorn.conf.py app:app"
    lines = ["[Service]"]
    if user:
        lines.append(f"User={user}")
    lines += [
        f"WorkingDirectory={directory}",
        f"ExecStart={venv}/bin/gunicorn {argv}",
    ]
    lines += textwrap.dedent(service).strip().splitlines()
    unit = directory / "shop.service"
    unit.write_text("\n".join(lines) + "\n")
    return unit


def check_unit(unit: Path, *extra: str, select: str = "logs") -> dict:
    report, _ = run_json("check", "--unit", str(unit), "--select", select, *extra)
    return report


def only(report: dict, check_id: str, severity: str | None = None) -> dict:
    findings = findings_of(report, check_id)
    if severity is not None:
        findings = [f for f in findings if f["severity"] == severity]
    assert len(findings) == 1, findings
    return findings[0]


def severities(report: dict, check_id: str) -> list[str]:
    return [f["severity"] for f in findings_of(report, check_id)]


def setpriv_nobody() -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv(1) is not installed")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def start_as_nobody(venv: Path, directory: Path, *args: str) -> subprocess.Popen:
    """Start gunicorn as uid 65534, as systemd would for User=nobody."""
    return subprocess.Popen(
        [
            *setpriv_nobody(),
            str(venv / "bin" / "gunicorn"),
            "--no-control-socket",
            *args,
        ],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    """Stop a process by its pid and make sure it is gone."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(15)
    assert process.poll() is not None


# --- logs-writable ----------------------------------------------------------------


@pytest.mark.fires("logs-writable")
def test_root_owned_directory_stops_nobody(shared_dir, nobody_venv):
    logs = shared_dir / "logs"
    logs.mkdir(mode=0o755)
    unit = write_deployment(
        shared_dir,
        nobody_venv,
        f'errorlog = "{logs}/error.log"\n',
        user="nobody",
    )

    report = check_unit(unit)

    destination = only(report, "logs-destination", "ok")
    assert (
        f"settings: resolved by gunicorn {GUNICORN_NEW_VERSION}"
        in (destination["evidence"])
    )
    finding = only(report, "logs-writable")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(f"nobody cannot create files in {logs} ")
    assert "owned by root:root with mode drwxr-xr-x" in finding["title"]
    assert f"drwxr-xr-x root root {logs}" in finding["evidence"]
    assert f"namei -l {logs}" in finding["evidence"]
    assert f"install -d -o nobody -g nogroup -m 0755 {logs}" in finding["fix"]
    assert finding["location"] == {
        "path": str(shared_dir / "gunicorn.conf.py"),
        "line": 1,
    }

    # gunicorn itself, started as nobody, fails the way the finding says.
    process = start_as_nobody(
        nobody_venv,
        shared_dir,
        "-c",
        "gunicorn.conf.py",
        "-b",
        f"127.0.0.1:{free_port()}",
        "app:app",
    )
    try:
        _out, err = process.communicate(timeout=30)
    finally:
        stop(process)
    assert process.returncode != 0
    message = (
        f"Error: Error: '{logs}/error.log' isn't writable"
        " [PermissionError(13, 'Permission denied')]"
    )
    assert message in err
    assert message in finding["detail"]


@pytest.mark.quiet("logs-writable")
@pytest.mark.quiet("logs-disk-space")
def test_directory_owned_by_user_is_quiet(shared_dir, nobody_venv):
    logs = shared_dir / "logs"
    logs.mkdir(mode=0o755)
    os.chown(logs, NOBODY, NOBODY)
    port = free_port()
    unit = write_deployment(
        shared_dir,
        nobody_venv,
        f'bind = "127.0.0.1:{port}"\nerrorlog = "{logs}/error.log"\n',
        user="nobody",
    )

    report = check_unit(unit)

    writable = only(report, "logs-writable")
    assert writable["severity"] == "ok"
    assert writable["title"] == f"nobody can open {logs}/error.log"
    space = only(report, "logs-disk-space")
    assert space["severity"] == "ok"
    assert any(row.startswith("df -h: ") for row in space["evidence"][1:])

    process = start_as_nobody(
        nobody_venv, shared_dir, "-c", "gunicorn.conf.py", "app:app"
    )
    try:
        wait_for_port(port)
        assert (logs / "error.log").stat().st_uid == NOBODY
    finally:
        stop(process)


@pytest.mark.fires("logs-writable")
def test_private_parent_names_blocking_component(shared_dir, nobody_venv):
    private = shared_dir / "private"
    logs = private / "logs"
    logs.mkdir(parents=True)
    private.chmod(0o700)
    os.chown(private, OTHER_UID, OTHER_UID)
    unit = write_deployment(
        shared_dir,
        nobody_venv,
        'accesslog = "private/logs/access.log"\n',
        user="nobody",
    )

    report = check_unit(unit)

    finding = only(report, "logs-writable")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(f"nobody cannot search {private} ")
    assert (
        f"owned by {OTHER_UID}:{OTHER_UID} with mode drwx------" in (finding["title"])
    )
    assert f"drwx------ {OTHER_UID} {OTHER_UID} {private}" in finding["evidence"]
    assert finding["fix"].startswith(f"chmod o+x {private} ")
    assert f"{logs}/access.log" in finding["detail"]


@pytest.mark.fires("logs-writable")
def test_workers_cannot_reopen_after_usr1(shared_dir, nobody_venv):
    # The unit has no User=, so the master runs as root and can open the file;
    # the workers run as nobody and would fail when USR1 makes them reopen it.
    private = shared_dir / "private"
    (private / "logs").mkdir(parents=True)
    private.chmod(0o700)
    unit = write_deployment(
        shared_dir,
        nobody_venv,
        'user = "nobody"\nerrorlog = "private/logs/error.log"\n',
    )

    report = check_unit(unit)

    finding = only(report, "logs-writable")
    assert finding["severity"] == "warning"
    assert finding["title"].startswith(f"nobody cannot search {private} ")
    assert "USR1" in finding["detail"]
    assert "workers: nobody (user = 65534" in finding["evidence"][0]


@pytest.mark.fires("logs-writable")
def test_missing_directory(shared_dir, nobody_venv):
    unit = write_deployment(
        shared_dir, nobody_venv, 'errorlog = "var/log/shop/error.log"\n'
    )

    report = check_unit(unit)

    finding = only(report, "logs-writable")
    assert finding["severity"] == "error"
    assert finding["title"] == f"the directory {shared_dir}/var does not exist"
    assert "FileNotFoundError(2, 'No such file or directory')" in finding["detail"]
    assert finding["fix"] == (
        f"install -d -o root -g root -m 0755 {shared_dir}/var/log/shop"
    )


@pytest.mark.quiet("logs-writable")
def test_logs_directory_created_by_systemd(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    shutil.rmtree(root / "var/log/gunicorn")
    unit = root / "etc/systemd/system/ecommerce.service"
    unit.write_text(
        unit.read_text().replace(
            "Restart=always", "LogsDirectory=gunicorn\nRestart=always"
        )
    )

    report, _ = run_json("check", "--root", str(root), "--select", "logs-writable")

    finding = only(report, "logs-writable")
    assert finding["severity"] == "ok"
    assert any(
        "LogsDirectory=gunicorn" in row and "creates /var/log/gunicorn" in row
        for row in finding["evidence"]
    )


# --- logs-destination -------------------------------------------------------------


@pytest.mark.quiet("logs-destination")
@pytest.mark.quiet("logs-rotation")
def test_default_logs_go_to_journal(shared_dir, nobody_venv):
    unit = write_deployment(shared_dir, nobody_venv, None)

    report = check_unit(unit)

    good = only(report, "logs-destination", "ok")
    assert good["title"] == (
        "error log → stderr → the journal (journalctl -u shop.service)"
    )
    access = only(report, "logs-destination", "info")
    assert access["title"] == "gunicorn writes no access log"
    assert f"gunicorn {GUNICORN_NEW_VERSION}'s default" in access["detail"]
    rotation = only(report, "logs-rotation")
    assert rotation["severity"] == "ok"
    assert severities(report, "logs-writable") == ["skipped"]


@pytest.mark.fires("logs-destination")
def test_stderr_to_null_loses_error_log(shared_dir, nobody_venv):
    unit = write_deployment(
        shared_dir, nobody_venv, 'accesslog = "-"\n', service="StandardError=null"
    )

    report = check_unit(unit)

    lost = only(report, "logs-destination", "warning")
    assert lost["title"] == "the error log goes to /dev/null: the lines are lost"
    assert "StandardError=null" in lost["detail"]
    assert lost["location"] == {"path": str(unit), "line": 4}
    assert lost["fix"].startswith("StandardError=journal")
    good = only(report, "logs-destination", "ok")
    assert "access log → stdout → the journal" in good["title"]


@pytest.mark.fires("logs-destination")
def test_daemon_sends_dash_logs_to_null(shared_dir, nobody_venv):
    unit = write_deployment(shared_dir, nobody_venv, 'daemon = True\naccesslog = "-"\n')

    report = check_unit(unit)

    lost = only(report, "logs-destination", "warning")
    assert lost["title"] == (
        "the error log and the access log go to /dev/null: the lines are lost"
    )
    assert lost["fix"].startswith("daemon = False")
    assert lost["location"] == {
        "path": str(shared_dir / "gunicorn.conf.py"),
        "line": 1,
    }


@pytest.mark.fires("logs-destination")
def test_missing_logconfig_stops_gunicorn(shared_dir, nobody_venv):
    unit = write_deployment(shared_dir, nobody_venv, 'logconfig = "logging.ini"\n')

    report = check_unit(unit)

    finding = only(report, "logs-destination", "error")
    assert finding["title"] == (
        f"the logging config {shared_dir}/logging.ini does not exist"
    )
    assert (
        f"Error: log config '{shared_dir}/logging.ini' not found" in (finding["detail"])
    )


LOGGING_INI = """\
[loggers]
keys=root

[handlers]
keys=console,file

[formatters]
keys=plain

[logger_root]
handlers=console,file

[handler_console]
class=StreamHandler
args=(sys.stdout,)

[handler_file]
class=logging.handlers.WatchedFileHandler
args=('%(here)s/logs/app.log', 'a')

[formatter_plain]
format=%(message)s
"""

LOGGING_DICT = """\
logconfig_dict = {
    "version": 1,
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "logs/app.log"},
    },
}
"""


@pytest.mark.fires("logs-writable")
@pytest.mark.parametrize("kind", ["logconfig", "logconfig_dict"])
def test_logconfig_handlers_are_checked(kind, shared_dir, nobody_venv):
    (shared_dir / "logs").mkdir(mode=0o755)
    if kind == "logconfig":
        (shared_dir / "logging.ini").write_text(LOGGING_INI)
        config = 'logconfig = "logging.ini"\n'
    else:
        config = LOGGING_DICT
    unit = write_deployment(shared_dir, nobody_venv, config, user="nobody")

    report = check_unit(unit)

    finding = only(report, "logs-writable")
    assert finding["severity"] == "error"
    assert f"{shared_dir}/logs/app.log" in finding["detail"]
    assert f"of {kind}" in finding["detail"] or "logging.ini" in finding["detail"]
    good = only(report, "logs-destination", "ok")
    assert f"→ {shared_dir}/logs/app.log" in good["title"]


def test_computed_path_is_not_checked(shared_dir, nobody_venv):
    unit = write_deployment(
        shared_dir,
        nobody_venv,
        'import os\nerrorlog = os.path.join("/var/log", "shop.log")\n',
    )

    report = check_unit(unit, "--static")

    (unknown,) = [
        f
        for f in findings_of(report, "logs-destination")
        if f["title"].startswith("the error log (errorlog) not checked")
    ]
    assert unknown["severity"] == "info"
    assert "os.path.join" in unknown["title"]
    writable = only(report, "logs-writable")
    assert writable["severity"] == "skipped"
    assert "no log file path could be read" in writable["detail"]


# --- logs-rotation ----------------------------------------------------------------


def rotation_report(
    tmp_path, rule: str | None, conf: str | None = None, *, remove: bool = False
) -> dict:
    """Check the ecommerce tree with ``rule`` as its logrotate.d/gunicorn.

    With ``rule`` None the fixture's own rule stays; ``remove`` deletes it.
    """
    root = copy_fixture("ecommerce", tmp_path)
    target = root / "etc/logrotate.d/gunicorn"
    if remove:
        target.unlink()
    elif rule is not None:
        target.write_text(textwrap.dedent(rule))
    if conf is not None:
        (root / "etc/logrotate.conf").write_text(textwrap.dedent(conf))
    report, _ = run_json("check", "--root", str(root), "--select", "logs-rotation")
    return report


FAULTY_RULES = {
    "no signal": (
        None,
        (
            "logrotate renames the error log /var/log/gunicorn/error.log and the"
            " access log /var/log/gunicorn/access.log without making gunicorn reopen"
            " them"
        ),
        2,
    ),
    "other pid file": (
        """\
        /var/log/gunicorn/*.log {
            postrotate
                [ -f /run/gunicorn/other.pid ] && kill -USR1 $(cat /run/gunicorn/other.pid)
            endscript
        }
        """,
        (
            "it reads the pid from /run/gunicorn/other.pid, while gunicorn writes its"
            " pid to /run/gunicorn/ecommerce.pid"
        ),
        3,
    ),
    "other unit": (
        """\
        /var/log/gunicorn/*.log {
            postrotate
                systemctl kill -s USR1 blog.service
            endscript
        }
        """,
        "it names the unit blog.service, not ecommerce.service",
        3,
    ),
    "wrong signal": (
        """\
        /var/log/gunicorn/*.log {
            postrotate
                kill `cat /var/run/gunicorn/ecommerce.pid`
            endscript
        }
        """,
        "it sends SIGTERM, not USR1",
        3,
    ),
}


@pytest.mark.fires("logs-rotation")
@pytest.mark.parametrize("case", sorted(FAULTY_RULES))
def test_rotation_without_reopen_warns(case, tmp_path):
    rule, expected, line = FAULTY_RULES[case]

    report = rotation_report(tmp_path, rule)

    finding = only(report, "logs-rotation")
    assert finding["severity"] == "warning"
    assert expected in finding["title"]
    assert finding["location"] == {"path": "/etc/logrotate.d/gunicorn", "line": line}
    rule_row = finding["evidence"][0]
    assert rule_row.startswith("/etc/logrotate.d/gunicorn:")
    assert rule_row.endswith(" /var/log/gunicorn/*.log { ... }")
    assert "systemctl kill --signal=USR1 ecommerce.service" in finding["fix"]


REOPENING_RULES = {
    "copytruncate": (
        """\
        /var/log/gunicorn/*.log {
            daily
            copytruncate
        }
        """,
        "rotated with copytruncate",
    ),
    "kill with the pid file": (
        """\
        /var/log/gunicorn/*.log {
            create
            sharedscripts
            postrotate
                # make gunicorn reopen its files { not a block }
                kill -USR1 `cat /var/run/gunicorn/ecommerce.pid` || true
            endscript
        }
        """,
        "(SIGUSR1)",
    ),
    "systemctl reload with ExecReload sending HUP": (
        """\
        /var/log/gunicorn/*.log
        {
            create
            postrotate
                systemctl reload ecommerce >/dev/null 2>&1 || true
            endscript
        }
        """,
        "whose ExecReload sends HUP",
    ),
    "quoted paths": (
        """\
        "/var/log/gunicorn/access.log" '/var/log/gunicorn/error.log' {
            copytruncate
        }
        """,
        "rotated with copytruncate",
    ),
}


@pytest.mark.quiet("logs-rotation")
@pytest.mark.parametrize("case", sorted(REOPENING_RULES))
def test_rotation_that_reopens_is_quiet(case, tmp_path):
    rule, expected = REOPENING_RULES[case]

    report = rotation_report(tmp_path, rule)

    finding = only(report, "logs-rotation")
    assert finding["severity"] == "ok"
    assert expected in finding["title"]
    assert (
        "/var/log/gunicorn/error.log, /var/log/gunicorn/access.log"
        in (finding["title"])
    )


def test_global_copytruncate_applies_through_include(tmp_path):
    report = rotation_report(
        tmp_path,
        "/var/log/gunicorn/*.log {\n    daily\n}\n",
        conf="weekly\ncopytruncate\ninclude /etc/logrotate.d\n",
    )

    finding = only(report, "logs-rotation")
    assert finding["severity"] == "ok"
    assert "copytruncate" in finding["title"]
    assert "/etc/logrotate.conf:2: copytruncate" in finding["evidence"]


def test_no_rule_is_info(tmp_path):
    report = rotation_report(tmp_path, None, remove=True)

    finding = only(report, "logs-rotation")
    assert finding["severity"] == "info"
    assert finding["title"].startswith("no logrotate rule covers")
    assert "/var/log/gunicorn/*.log {" in finding["fix"]


def test_created_file_the_master_cannot_write(tmp_path):
    report = rotation_report(
        tmp_path,
        """\
        /var/log/gunicorn/*.log {
            create 0640 root root
            postrotate
                systemctl kill --signal=USR1 ecommerce.service
            endscript
        }
        """,
    )

    findings = findings_of(report, "logs-rotation")
    assert [f["severity"] for f in findings] == ["error", "error"]
    assert findings[0]["title"] == (
        "after rotation /var/log/gunicorn/error.log belongs to a user www-data"
        " cannot write as"
    )
    assert "Unhandled exception in main loop" in findings[0]["detail"]
    assert findings[0]["location"] == {"path": "/etc/logrotate.d/gunicorn", "line": 2}
    assert (
        "-rw-r----- root root /var/log/gunicorn/error.log"
        in (findings[0]["evidence"][-1])
    )


def test_master_cannot_recreate_file_without_create(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    logs = root / "var/log/gunicorn"
    os.chown(logs, 0, 0)
    logs.chmod(0o755)
    (root / "etc/logrotate.d/gunicorn").write_text(
        "/var/log/gunicorn/error.log {\n"
        "    nocreate\n"
        "    postrotate\n"
        "        systemctl kill --signal=USR1 ecommerce.service\n"
        "    endscript\n"
        "}\n"
    )

    report, _ = run_json("check", "--root", str(root), "--select", "logs-rotation")

    finding = only(report, "logs-rotation", "error")
    assert finding["title"] == (
        "after rotation the master (www-data) cannot create /var/log/gunicorn/error.log"
    )
    assert "Because www-data cannot" in finding["detail"]
    assert finding["fix"].startswith("create 0640 www-data www-data")
    assert "drwxr-xr-x root root /var/log/gunicorn" in finding["evidence"]


def test_group_writable_directory_is_skipped_by_logrotate(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    logs = root / "var/log/gunicorn"
    os.chown(logs, 0, 33)
    logs.chmod(0o775)
    (root / "etc/logrotate.d/gunicorn").write_text(
        "/var/log/gunicorn/*.log {\n    copytruncate\n}\n"
    )

    report, _ = run_json("check", "--root", str(root), "--select", "logs-rotation")

    skipped = only(report, "logs-rotation", "warning")
    assert skipped["title"] == (
        "logrotate skips the logs in /var/log/gunicorn: it is writable by the group"
        " www-data"
    )
    assert skipped["fix"] == (
        "chmod go-w /var/log/gunicorn, or add to the rule: su root www-data"
    )


def test_rotated_file_still_open_until_usr1(shared_dir, venv_gunicorn_new):
    logs = shared_dir / "logs"
    logs.mkdir()
    (shared_dir / "app.py").write_text(APP)
    port = free_port()
    server = Gunicorn(
        venv_gunicorn_new,
        shared_dir,
        "--no-control-socket",
        "-b",
        f"127.0.0.1:{port}",
        "--error-logfile",
        str(logs / "error.log"),
        "app:app",
    )
    try:
        wait_for_port(port)
        # What logrotate does without copytruncate or a postrotate signal.
        (logs / "error.log").rename(logs / "error.log.1")
        stale, _ = run_json(
            "check", "--pid", str(server.pid), "--select", "logs-rotation"
        )
        os.kill(server.pid, signal.SIGUSR1)
        wait_for_reopen(server.pid, logs / "error.log")
        fresh, _ = run_json(
            "check", "--pid", str(server.pid), "--select", "logs-rotation"
        )
    finally:
        server.stop()
    assert not psutil.pid_exists(server.pid) or (
        psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE
    )

    warning = only(stale, "logs-rotation", "warning")
    assert warning["title"] == (
        f"gunicorn still writes to {logs}/error.log.1, not {logs}/error.log"
    )
    assert f"{server.pid} (master)" in warning["detail"]
    assert "(worker)" in warning["detail"]
    assert warning["evidence"][0].startswith(f"ls -l /proc/{server.pid}/fd/")
    assert warning["evidence"][0].endswith(f" -> {logs}/error.log.1")
    assert warning["fix"].startswith(f"kill -USR1 {server.pid}")
    assert "warning" not in severities(fresh, "logs-rotation")


def wait_for_reopen(pid: int, path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        targets = []
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
            except OSError:
                continue
        if str(path) in targets and not any(t.endswith(".1") for t in targets):
            return
        time.sleep(0.05)
    raise TimeoutError(f"pid {pid} did not reopen {path}")


# --- logs-disk-space --------------------------------------------------------------


@contextmanager
def tmpfs(directory: Path, options: str):
    """Mount a small tmpfs on ``directory`` for the duration of the block."""
    directory.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Write to ``directory`` until at most ``leave`` bytes stay available."""
    numbers = os.statvfs(directory)
    size = numbers.f_bavail * numbers.f_frsize - leave
    try:
        with open(directory / "filler", "wb") as handle:
            handle.write(b"x" * max(size, 0))
    except OSError:
        pass


@pytest.mark.fires("logs-disk-space")
def test_full_filesystem_is_error(shared_dir, nobody_venv):
    unit = write_deployment(shared_dir, nobody_venv, 'errorlog = "logs/error.log"\n')
    with tmpfs(shared_dir / "logs", "size=256k") as logs:
        fill(logs)
        assert os.statvfs(logs).f_bavail == 0
        report = check_unit(unit, select="logs-disk-space")

    finding = only(report, "logs-disk-space")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"the filesystem holding {logs}/error.log has no free space"
    )
    assert any(
        row.startswith("df -h: tmpfs 256K") and row.endswith(f" 100% {logs}")
        for row in finding["evidence"]
    ), finding["evidence"]


@pytest.mark.fires("logs-disk-space")
def test_almost_full_filesystem_warns(shared_dir, nobody_venv):
    unit = write_deployment(shared_dir, nobody_venv, 'errorlog = "logs/error.log"\n')
    with tmpfs(shared_dir / "logs", "size=1m") as logs:
        fill(logs, leave=16 * 1024)
        report = check_unit(unit, select="logs-disk-space")

    finding = only(report, "logs-disk-space")
    assert finding["severity"] == "warning"
    assert finding["title"].startswith(
        f"the filesystem holding {logs}/error.log is almost full: space 1."
    )


@pytest.mark.fires("logs-disk-space")
def test_no_free_inodes_is_error(shared_dir, nobody_venv):
    unit = write_deployment(shared_dir, nobody_venv, 'errorlog = "logs/error.log"\n')
    with tmpfs(shared_dir / "logs", "size=1m,nr_inodes=8") as logs:
        for number in range(16):
            try:
                (logs / f"file{number}").touch()
            except OSError:
                break
        assert os.statvfs(logs).f_favail == 0
        report = check_unit(unit, select="logs-disk-space")

    finding = only(report, "logs-disk-space")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"the filesystem holding {logs}/error.log has no free inodes"
    )
    assert any(row.startswith("df -i: tmpfs 8 8 0 100%") for row in finding["evidence"])


# --- the logrotate reader ---------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> RootFS:
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return RootFS(root)


def test_reader_follows_logrotate_syntax(tmp_path):
    fs = write_tree(
        tmp_path,
        {
            "/etc/logrotate.conf": """\
                # global defaults
                create 0640 root adm
                include /etc/logrotate.d
                """,
            "/etc/logrotate.d/app": """\
                /srv/app/logs/access.log /srv/app/logs/error.log
                "/srv/app/logs/with space.log" {
                    copytruncate
                    postrotate
                        if [ -f /run/app.pid ]; then { kill -USR1 $(cat /run/app.pid); }; fi
                    endscript
                }
                /srv/other/*.log { nocreate }
                """,
            "/etc/logrotate.d/app.dpkg-old": "/srv/app/logs/*.log {\n}\n",
        },
    )

    config = read_logrotate(fs)

    assert config.files == ["/etc/logrotate.conf", "/etc/logrotate.d/app"]
    assert config.problems == []
    first, second = config.rules
    assert first.patterns == [
        "/srv/app/logs/access.log",
        "/srv/app/logs/error.log",
        "/srv/app/logs/with space.log",
    ]
    assert first.line == 1
    assert first.options.copytruncate is True
    assert first.options.create.mode == 0o640
    assert first.options.create.owner == "root"
    assert "kill -USR1" in first.scripts["postrotate"].text
    assert second.patterns == ["/srv/other/*.log"]
    assert second.options.create is None
    assert config.rule_for("/srv/app/logs/with space.log")[0] is first
    assert config.rule_for("/srv/other/x.log")[0] is second
    assert config.rule_for("/srv/other/deeper/x.log") is None


def test_reader_reports_bad_input(tmp_path):
    fs = write_tree(
        tmp_path,
        {
            "/etc/logrotate.d/broken": """\
                /srv/app/"unterminated {
                    copytruncate
                }
                }
                /srv/app/b.log {
                    postrotate
                        kill -USR1 1
                """,
        },
    )

    config = read_logrotate(fs)

    messages = [message for _path, _line, message in config.problems]
    assert any(message.startswith("cannot parse file names") for message in messages)
    assert "unexpected '}'" in messages
    assert "postrotate has no endscript" in messages


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("/var/log/app/*.log", "/var/log/app/error.log", True),
        ("/var/log/app/*.log", "/var/log/app/sub/error.log", False),
        ("/var/log/app/*", "/var/log/app/.hidden", False),
        ("/var/log/*/error.log", "/var/log/app/error.log", True),
        ("/var/log/app/[ae]*.log", "/var/log/app/access.log", True),
    ],
)
def test_glob_covers(pattern, path, covered):
    assert glob_covers(pattern, path) is covered


@pytest.mark.parametrize(
    ("script", "how", "signal_name", "detail"),
    [
        ("kill -USR1 $(cat /run/app.pid)", "pidfile", "USR1", "/run/app.pid"),
        ("/bin/kill -s USR1 `cat /run/app.pid`", "pidfile", "USR1", "/run/app.pid"),
        ("kill -SIGUSR1 $(< /run/app.pid)", "pidfile", "USR1", "/run/app.pid"),
        ("kill -10 $(head -n 1 /run/app.pid)", "pidfile", "USR1", "/run/app.pid"),
        ("systemctl kill --signal=USR1 app", "unit-kill", "USR1", "app"),
        ("systemctl kill -s HUP --kill-whom=main app", "unit-kill", "HUP", "app"),
        ("systemctl reload app.service > /dev/null", "unit-reload", "", "app.service"),
        ("invoke-rc.d app rotate", "unit-reload", "", "app"),
        ("pkill -USR1 -f 'gunicorn: master'", "by-name", "USR1", None),
        (
            "if [ -f /run/app.pid ]; then kill -USR1 `cat /run/app.pid`; fi",
            "pidfile",
            "USR1",
            "/run/app.pid",
        ),
        ("systemctl kill --kill-whom main -s USR1 app", "unit-kill", "USR1", "app"),
    ],
)
def test_signal_commands(script, how, signal_name, detail):
    (command,) = find_signal_commands(RotateScript("postrotate", script, 5))

    assert command.how == how
    assert command.signal == signal_name
    assert command.line == 6
    assert detail in (command.pidfile, command.unit)
