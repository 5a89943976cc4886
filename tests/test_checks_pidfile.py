"""pidfile checks against real gunicorn masters, real processes and real files.

Live scenarios run in a directory below /tmp with mode 0755, because pytest's
tmp_path sits in a directory with mode 0700 that the unit's User=nobody
could not search, which would hide the fault each test plants. systemd is
not PID 1 on the test machine, so unit files are plain files passed with
--unit and nothing starts them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from tests.conftest import make_venv
from tests.helpers import FIXTURES, REPO, findings_of, run_json

APP_SOURCE = (
    "def app(environ, start_response):\n"
    '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
    '    return [b"ok"]\n'
)
START_TIMEOUT = 30.0
NOBODY = 65534


def only(report: dict, check_id: str) -> dict:
    found = findings_of(report, check_id)
    assert len(found) == 1, found
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]


@pytest.fixture
def shared_dir():
    directory = Path(tempfile.mkdtemp(prefix="pidfile-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def make_app(base: Path, pidfile: str | None) -> Path:
    """Write a deployment directory whose gunicorn.conf.py sets ``pidfile``."""
    app_dir = base / "app"
    app_dir.mkdir(mode=0o755)
    (app_dir / "app.py").write_text(APP_SOURCE)
    lines = [f'bind = "127.0.0.1:{free_port()}"', "workers = 1"]
    if pidfile is not None:
        lines.append(f"pidfile = {pidfile!r}")
    (app_dir / "gunicorn.conf.py").write_text("\n".join(lines) + "\n")
    return app_dir


def doctor_live(app_dir: Path, venv: Path, *extra: str) -> dict:
    report, _ = run_json(
        "check",
        "app:app",
        "--chdir",
        str(app_dir),
        "--venv",
        str(venv),
        "--select",
        "pidfile",
        *extra,
    )
    return report


class Master:
    """A gunicorn master started from the test venv, stopped by pid."""

    def __init__(self, venv: Path, app_dir: Path, pidfile: Path):
        self.pidfile = pidfile
        # A file, not a pipe: a full pipe would block the master's logging.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "app:app"],
            cwd=app_dir,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        self.pid = self.process.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise AssertionError(self.log.read().decode())
            if pidfile.exists() and pidfile.read_text().strip() == str(self.pid):
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"gunicorn did not write {pidfile}")

    def family(self) -> list[int]:
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return [self.pid]
        return [self.pid, *(child.pid for child in children)]

    def kill(self) -> list[int]:
        """SIGKILL the master and then its workers, as the OOM killer might."""
        pids = self.family()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        wait_gone(pids)
        return pids

    def stop(self) -> None:
        if self.process.poll() is None:
            pids = self.family()
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
            wait_gone(pids)
        self.log.close()


def run_gunicorn_once(venv: Path, app_dir: Path, log: Path) -> tuple[int | None, str]:
    """Start gunicorn and stop it once it listens.

    Returns gunicorn's exit status when it exited by itself (None when it was
    stopped) and its log.
    """
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "app:app"],
            cwd=app_dir,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    exited = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if "Listening at:" in log.read_text():
                break
            time.sleep(0.05)
        exited = process.poll()
    finally:
        if process.poll() is None:
            pids = [
                process.pid,
                *(c.pid for c in psutil.Process(process.pid).children()),
            ]
            process.terminate()
            process.wait(timeout=15)
            wait_gone(pids)
    return exited, log.read_text()


@pytest.mark.fires("pidfile-stale")
@pytest.mark.quiet("pidfile-content")
def test_sigkilled_master_leaves_stale_file(shared_dir, venv_gunicorn_new):
    pidfile = shared_dir / "run" / "app.pid"
    pidfile.parent.mkdir()
    app_dir = make_app(shared_dir, str(pidfile))
    master = Master(venv_gunicorn_new, app_dir, pidfile)
    try:
        killed = master.kill()
    finally:
        master.stop()
    assert pidfile.read_text().strip() == str(master.pid)

    report = doctor_live(app_dir, venv_gunicorn_new)

    stale = only(report, "pidfile-stale")
    assert stale["severity"] == "warning"
    assert f"names pid {master.pid}, which is not running" in stale["title"]
    assert f"ps -p {master.pid}: no such process" in stale["evidence"]
    assert stale["fix"].startswith(f"rm {pidfile}")
    content = only(report, "pidfile-content")
    assert content["severity"] == "ok"
    assert f"contains pid {master.pid}" in content["title"]

    # A warning, not an error: gunicorn replaces a file whose process is gone.
    status, log = run_gunicorn_once(venv_gunicorn_new, app_dir, shared_dir / "log")
    assert status is None, log
    assert "Listening at:" in log
    assert all(gone(pid) for pid in killed)


@pytest.mark.fires("pidfile-stale")
def test_pid_reused_by_another_program(shared_dir, venv_gunicorn_new):
    pidfile = shared_dir / "app.pid"
    app_dir = make_app(shared_dir, str(pidfile))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(f"{sleeper.pid}\n")

        report = doctor_live(app_dir, venv_gunicorn_new)
        status, log = run_gunicorn_once(venv_gunicorn_new, app_dir, shared_dir / "log")
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    assert gone(sleeper.pid)

    stale = only(report, "pidfile-stale")
    assert stale["severity"] == "error"
    assert stale["title"] == (
        f"{pidfile} names pid {sleeper.pid}, which is now sleep, not gunicorn"
    )
    rows = [row for row in stale["evidence"] if row.startswith(f"pid {sleeper.pid} ")]
    assert len(rows) == 1
    assert rows[0].endswith(": sleep 60")
    expected = f"Already running on PID {sleeper.pid} (or pid file '{pidfile}'"
    assert expected in stale["detail"]
    assert stale["fix"].startswith(f"rm {pidfile}")
    assert status == 1, log
    assert expected in log


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("garbage\n", "does not contain a PID"),
        ("", "is empty"),
    ],
)
@pytest.mark.fires("pidfile-content")
def test_pid_file_without_pid(shared_dir, venv_gunicorn_new, content, title):
    pidfile = shared_dir / "app.pid"
    pidfile.write_text(content)
    app_dir = make_app(shared_dir, str(pidfile))

    report = doctor_live(app_dir, venv_gunicorn_new)

    finding = only(report, "pidfile-content")
    assert finding["severity"] == "warning"
    assert finding["title"] == f"the PID file {pidfile} {title}"
    assert f"content: {content!r}" in finding["evidence"]
    assert finding["fix"].startswith(f"rm {pidfile}")
    stale = only(report, "pidfile-stale")
    assert stale["severity"] == "skipped"
    assert "contains no pid to look up" in stale["detail"]


@pytest.mark.fires("pidfile-directory")
def test_directory_not_writable_by_unit_user(shared_dir, venv_gunicorn_new):
    run_dir = shared_dir / "run"
    run_dir.mkdir()
    os.chown(run_dir, 4242, 4242)
    run_dir.chmod(0o755)
    app_dir = make_app(shared_dir, None)
    unit = shared_dir / "app.service"
    unit.write_text(
        "[Service]\n"
        "User=nobody\n"
        f"WorkingDirectory={app_dir}\n"
        f"ExecStart={venv_gunicorn_new}/bin/gunicorn --pid {run_dir}/app.pid"
        " app:app\n"
    )

    report = doctor_live(app_dir, venv_gunicorn_new, "--unit", str(unit))

    finding = only(report, "pidfile-directory")
    assert finding["severity"] == "error"
    assert finding["title"] == f"nobody cannot create the PID file in {run_dir}"
    assert f"User= in {unit}:2" in finding["detail"]
    assert f"cannot write and execute/search {run_dir}" in finding["detail"]
    assert f"drwxr-xr-x 4242 4242 {run_dir}" in finding["evidence"]
    assert finding["fix"].startswith(f"chown nobody:nogroup {run_dir}")
    assert finding["location"] == {"path": str(unit), "line": 4}


@pytest.mark.quiet("pidfile-stale")
@pytest.mark.quiet("pidfile-directory")
@pytest.mark.quiet("pidfile-content")
def test_pid_file_of_live_master(shared_dir, venv_gunicorn_new):
    pidfile = shared_dir / "app.pid"
    app_dir = make_app(shared_dir, str(pidfile))
    master = Master(venv_gunicorn_new, app_dir, pidfile)
    try:
        report = doctor_live(app_dir, venv_gunicorn_new)
    finally:
        master.stop()

    stale = only(report, "pidfile-stale")
    assert stale["severity"] == "ok"
    assert stale["title"] == f"{pidfile} names the running master, pid {master.pid}"
    assert any(row.startswith(f"pid {master.pid} ") for row in stale["evidence"])
    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "ok"
    assert f"drwxr-xr-x root root {shared_dir}" in directory["evidence"]
    content = only(report, "pidfile-content")
    assert content["severity"] == "ok"
    assert content["title"] == f"the PID file {pidfile} contains pid {master.pid}"


def filesystem_type(path: str) -> str:
    result = subprocess.run(
        ["stat", "-f", "-c", "%T", path], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.mark.fires("pidfile-tmpfs")
def test_live_directory_on_tmpfs(venv_gunicorn_new, shared_dir):
    if not os.path.isdir("/dev/shm") or filesystem_type("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    run_dir = Path(tempfile.mkdtemp(prefix="pidfile-test-", dir="/dev/shm"))
    try:
        app_dir = make_app(shared_dir, f"{run_dir}/app.pid")
        report = doctor_live(app_dir, venv_gunicorn_new)
    finally:
        shutil.rmtree(run_dir)

    finding = only(report, "pidfile-tmpfs")
    assert finding["severity"] == "warning"
    assert (
        finding["title"] == f"{run_dir} is on a tmpfs and nothing recreates it at boot"
    )
    assert any(
        row.startswith(f"findmnt --target {run_dir}: /dev/shm ")
        and row.endswith(" tmpfs")
        for row in finding["evidence"]
    )
    assert f"d {run_dir} 0755 root root -" in finding["fix"]


@pytest.mark.fires("pidfile-directory")
@pytest.mark.fires("pidfile-tmpfs")
@pytest.mark.quiet("pidfile-unit")
def test_ecommerce_fixture_under_root():
    report, result = run_json("check", "--root", str(FIXTURES / "ecommerce"))
    assert result.returncode == 1

    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "error"
    assert directory["title"] == (
        "the PID file's directory /var/run/gunicorn does not exist"
    )
    assert "/var/run/gunicorn: No such file or directory" in directory["evidence"]
    assert "master user: www-data (User= in" in " ".join(directory["evidence"])
    assert "RuntimeDirectory=gunicorn" in directory["fix"]
    assert (
        "install -d -o www-data -g www-data -m 0755 /var/run/gunicorn"
        in directory["fix"]
    )
    tmpfs = only(report, "pidfile-tmpfs")
    assert tmpfs["severity"] == "warning"
    assert tmpfs["title"] == (
        "/var/run/gunicorn is on a tmpfs and nothing recreates it at boot"
    )
    assert "after the next reboot" in tmpfs["detail"]
    assert any("/run is assumed to be a tmpfs" in row for row in tmpfs["evidence"])
    assert "d /run/gunicorn 0755 www-data www-data -" in tmpfs["fix"]
    assert tmpfs["location"] == {
        "path": "/var/www/ecommerce_knowledge/gunicorn_config.py",
        "line": 18,
    }
    stale = only(report, "pidfile-stale")
    assert stale["severity"] == "skipped"
    assert "cannot be known: the target is the tree under --root" in stale["detail"]
    content = only(report, "pidfile-content")
    assert content["severity"] == "ok"
    unit = only(report, "pidfile-unit")
    assert unit["severity"] == "ok"


# --- trees under --root: the unit and tmpfiles.d cases ---------------------


def make_tree(base: Path, service: str, config: str) -> Path:
    """Write a root with one gunicorn unit, shop.service, and its deployment."""
    root = base / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(FIXTURES / "ecommerce" / "etc" / name, root / "etc" / name)
    (root / "etc" / "systemd" / "system" / "shop.service").write_text(
        "[Service]\n"
        "User=www-data\n"
        "Group=www-data\n"
        "WorkingDirectory=/srv/shop\n"
        "ExecStart=/srv/shop/venv/bin/gunicorn -c gunicorn.conf.py app:app\n" + service
    )
    (root / "srv" / "shop").mkdir(parents=True)
    (root / "srv" / "shop" / "app.py").write_text(APP_SOURCE)
    (root / "srv" / "shop" / "gunicorn.conf.py").write_text(config)
    return root


def doctor_tree(root: Path) -> dict:
    report, _ = run_json("check", "--root", str(root), "--select", "pidfile")
    return report


def test_missing_directory_behind_var_run_link(tmp_path):
    root = make_tree(tmp_path, "", 'pidfile = "/var/run/shop/shop.pid"\n')
    (root / "run").mkdir()
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")

    report = doctor_tree(root)

    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "error"
    assert directory["title"] == (
        "the PID file's directory /var/run/shop does not exist"
    )
    assert directory["detail"].startswith("Nothing creates it")
    content = only(report, "pidfile-content")
    assert content["severity"] == "ok"
    assert content["title"] == (
        "/var/run/shop/shop.pid does not exist: there is no PID file to read"
    )


def test_relative_pid_file_uses_chdir(tmp_path):
    root = make_tree(tmp_path, "", 'pidfile = "run/shop.pid"\n')

    report = doctor_tree(root)

    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "error"
    assert directory["title"] == (
        "the PID file's directory /srv/shop/run does not exist"
    )
    assert "relative to gunicorn's working directory /srv/shop" in directory["evidence"]


def test_sticky_directory_blocks_replacing(tmp_path):
    root = make_tree(tmp_path, "", 'pidfile = "/srv/shop/run/shop.pid"\n')
    run_dir = root / "srv" / "shop" / "run"
    run_dir.mkdir()
    run_dir.chmod(0o1777)
    pidfile = run_dir / "shop.pid"
    pidfile.write_text("4242\n")
    pidfile.chmod(0o644)
    os.chown(pidfile, 1000, 1000)

    report = doctor_tree(root)

    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "error"
    assert directory["title"] == (
        "www-data cannot replace /srv/shop/run/shop.pid in the sticky directory"
        " /srv/shop/run"
    )
    assert "only the owner of /srv/shop/run/shop.pid (deploy)" in directory["detail"]
    assert "-rw-r--r-- deploy deploy /srv/shop/run/shop.pid" in directory["evidence"]


def test_pid_file_dangling_symlink(tmp_path):
    root = make_tree(tmp_path, "", 'pidfile = "/srv/shop/shop.pid"\n')
    (root / "srv" / "shop" / "shop.pid").symlink_to("/run/shop/shop.pid")

    report = doctor_tree(root)

    content = only(report, "pidfile-content")
    assert content["severity"] == "warning"
    assert content["title"] == (
        "the PID file /srv/shop/shop.pid is a symlink to a file that does not exist"
    )
    assert (
        "dangling symlink /srv/shop/shop.pid -> /run/shop/shop.pid"
        in content["evidence"]
    )
    assert content["fix"] == "rm /srv/shop/shop.pid"


@pytest.mark.quiet("pidfile-tmpfs")
@pytest.mark.quiet("pidfile-unit")
def test_runtime_directory_recreates_directory(tmp_path):
    root = make_tree(
        tmp_path,
        "RuntimeDirectory=shop\nPIDFile=/run/shop/shop.pid\n",
        'pidfile = "/run/shop/shop.pid"\n',
    )

    report = doctor_tree(root)

    tmpfs = only(report, "pidfile-tmpfs")
    assert tmpfs["severity"] == "ok"
    assert tmpfs["title"] == (
        "RuntimeDirectory= recreates /run/shop at each start of the service"
    )
    assert any(row.startswith("RuntimeDirectory=shop (") for row in tmpfs["evidence"])
    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "ok"
    assert directory["title"] == "systemd creates /run/shop at each start"
    unit = only(report, "pidfile-unit")
    assert unit["severity"] == "ok"
    assert unit["title"] == (
        "PIDFile= and gunicorn's pidfile both name /run/shop/shop.pid"
    )


def test_tmpfiles_entry_recreates_directory(tmp_path):
    root = make_tree(tmp_path, "", 'pidfile = "/var/run/shop/shop.pid"\n')
    (root / "run" / "shop").mkdir(parents=True)
    conf = root / "usr" / "lib" / "tmpfiles.d" / "shop.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# shop\nd /run/shop 0755 www-data www-data -\n")

    report = doctor_tree(root)

    tmpfs = only(report, "pidfile-tmpfs")
    assert tmpfs["severity"] == "ok"
    assert tmpfs["title"] == "tmpfiles.d recreates /var/run/shop at boot"
    assert (
        "/usr/lib/tmpfiles.d/shop.conf:2: d /run/shop 0755 www-data www-data -"
        in tmpfs["evidence"]
    )


@pytest.mark.fires("pidfile-tmpfs")
def test_masked_tmpfiles_entry_does_not_count(tmp_path):
    root = make_tree(tmp_path, "", 'pidfile = "/run/shop/shop.pid"\n')
    (root / "run" / "shop").mkdir(parents=True)
    vendor = root / "usr" / "lib" / "tmpfiles.d" / "shop.conf"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("d /run/shop 0755 www-data www-data -\n")
    (root / "etc" / "tmpfiles.d").mkdir()
    (root / "etc" / "tmpfiles.d" / "shop.conf").symlink_to("/dev/null")

    report = doctor_tree(root)

    tmpfs = only(report, "pidfile-tmpfs")
    assert tmpfs["severity"] == "warning"
    assert "It was created by hand" in tmpfs["detail"]
    assert "RuntimeDirectory=shop" in tmpfs["fix"]


@pytest.mark.fires("pidfile-unit")
def test_unit_pid_file_differs(tmp_path):
    root = make_tree(
        tmp_path,
        "PIDFile=/var/run/shop.pid\n",
        'pidfile = "/run/shop/shop.pid"\n',
    )

    report = doctor_tree(root)

    found = findings_of(report, "pidfile-unit")
    assert [f["severity"] for f in found] == ["warning", "info"]
    mismatch, legacy = found
    assert mismatch["title"] == (
        "the unit has PIDFile=/var/run/shop.pid, but gunicorn writes /run/shop/shop.pid"
    )
    assert (
        "PIDFile=/var/run/shop.pid (/etc/systemd/system/shop.service:6)"
        in mismatch["evidence"]
    )
    assert mismatch["fix"].startswith("PIDFile=/run/shop/shop.pid")
    assert mismatch["location"] == {
        "path": "/etc/systemd/system/shop.service",
        "line": 6,
    }
    assert "below the legacy directory /var/run" in legacy["title"]


@pytest.mark.fires("pidfile-unit")
def test_forking_unit_waits_for_other_file(tmp_path):
    root = make_tree(
        tmp_path,
        "Type=forking\nPIDFile=/run/shop.pid\n",
        'daemon = True\npidfile = "/run/shop/shop.pid"\n',
    )

    report = doctor_tree(root)

    finding = only(report, "pidfile-unit")
    assert finding["severity"] == "error"
    assert "Can't open PID file /run/shop.pid (yet?) after start" in finding["detail"]


@pytest.mark.fires("pidfile-unit")
def test_private_tmp_hides_pid_file(tmp_path):
    root = make_tree(tmp_path, "PrivateTmp=yes\n", 'pidfile = "/tmp/shop.pid"\n')

    report = doctor_tree(root)

    finding = only(report, "pidfile-unit")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        "gunicorn writes /tmp/shop.pid inside the service's private /tmp"
    )
    assert "PrivateTmp=yes (/etc/systemd/system/shop.service:6)" in finding["evidence"]


@pytest.mark.fires("pidfile-unit")
def test_private_tmp_lacks_subdirectory(tmp_path):
    root = make_tree(tmp_path, "DynamicUser=yes\n", 'pidfile = "/tmp/shop/shop.pid"\n')
    (root / "tmp" / "shop").mkdir(parents=True)

    report = doctor_tree(root)

    finding = only(report, "pidfile-unit")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "/tmp/shop does not exist in the service's private /tmp"
    )
    assert "DynamicUser=yes (/etc/systemd/system/shop.service:6)" in finding["evidence"]
    assert finding["fix"].startswith('pidfile = "/run/shop/shop.pid"')


@pytest.mark.quiet("pidfile-directory")
@pytest.mark.quiet("pidfile-content")
@pytest.mark.quiet("pidfile-tmpfs")
@pytest.mark.quiet("pidfile-unit")
def test_no_pid_file_anywhere(tmp_path):
    root = make_tree(tmp_path, "", "workers = 2\n")

    report = doctor_tree(root)

    for check_id in ("pidfile-directory", "pidfile-content", "pidfile-tmpfs"):
        finding = only(report, check_id)
        assert finding["severity"] == "ok", check_id
        assert finding["title"] == "gunicorn writes no PID file", check_id
        assert "pidfile = None (default)" in finding["evidence"], check_id
    stale = only(report, "pidfile-stale")
    assert stale["severity"] == "ok"
    assert stale["title"] == "gunicorn writes no PID file"
    unit = only(report, "pidfile-unit")
    assert unit["severity"] == "ok"
    assert unit["title"] == "neither gunicorn nor shop.service names a PID file"


# --- the doctor as an unprivileged user -------------------------------------


@pytest.fixture(scope="session")
def doctor_venv_for_nobody():
    """Return a venv with the doctor's dependencies that uid 65534 can use.

    The test interpreter's site-packages may sit below /root, which uid 65534
    cannot enter. The doctor itself is imported from the source tree, whose
    gunicorn_doctor.egg-info registers the checks.
    """
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv(1) is not installed")
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    if not (REPO / "gunicorn_doctor.egg-info").is_dir():
        pytest.skip("the source tree has no egg-info: run pip install -e .")
    base = Path(tempfile.mkdtemp(prefix="pidfile-doctor-venv-"))
    base.chmod(0o755)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    venv = make_venv(base / "venv", *project["dependencies"])
    yield venv
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.fires("pidfile-content")
def test_unprivileged_doctor_reads_tree(shared_dir, doctor_venv_for_nobody):
    root = make_tree(shared_dir, "", 'pidfile = "/srv/shop/run/shop.pid"\n')
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o644)
    run_dir = root / "srv" / "shop" / "run"
    run_dir.mkdir(mode=0o755)
    os.chown(run_dir, 33, 33)
    pidfile = run_dir / "shop.pid"
    pidfile.write_text("4242\n")
    pidfile.chmod(0o600)

    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            str(doctor_venv_for_nobody / "bin" / "python"),
            "-m",
            "doctor",
            "check",
            "--root",
            str(root),
            "--select",
            "pidfile",
            "--format",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    content = only(report, "pidfile-content")
    assert content["severity"] == "error"
    assert content["title"] == (
        "www-data cannot read the PID file /srv/shop/run/shop.pid"
    )
    assert "-rw------- root root /srv/shop/run/shop.pid" in content["evidence"]
    assert (
        f"the doctor (uid {NOBODY}) cannot read it either: Permission denied"
        in content["evidence"]
    )
    assert content["fix"].startswith("chown www-data:www-data /srv/shop/run/shop.pid")
    directory = only(report, "pidfile-directory")
    assert directory["severity"] == "ok"
    assert "drwxr-xr-x www-data www-data /srv/shop/run" in directory["evidence"]
