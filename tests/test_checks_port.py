"""port checks against real sockets, real gunicorn masters and real files.

Live scenarios hold ports with processes the tests start (a helper Python
that binds and sleeps, or gunicorn from the session venv) and stop each of
them by pid. Socket directories that nginx's user must reach live below /tmp
in directories with mode 0755, because pytest's tmp_path sits in a directory
with mode 0700 that www-data could not search. systemd is not PID 1 on the
test machine, so unit files are plain files passed with --unit or placed in
a --root tree, and nothing starts them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from doctor.facts.binds import BindError, parse_bind, read_listen_sockets
from tests.helpers import FIXTURES, REPO, copy_fixture, findings_of, run_json
from tests.servers import Gunicorn, free_port, wait_for_port, wait_for_workers

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
START_TIMEOUT = 20.0
# The runner's own GUNICORN_CMD_ARGS or PORT must not leak into the settings.
CLEAN_ENV = {"GUNICORN_CMD_ARGS": ""}
HOLD_PORT = """\
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("listening", flush=True)
time.sleep(300)
"""
NGINX_CONF = """\
user www-data;
events {{}}
http {{
    server {{
        listen 8080;
        location / {{ proxy_pass http://{target}; }}
    }}
}}
"""


# --- helpers ------------------------------------------------------------------


def only(report: dict, check_id: str) -> dict:
    found = findings_of(report, check_id)
    assert len(found) == 1, found
    return found[0]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]


def stop(server: Gunicorn) -> None:
    """Stop a master and check that it and its workers are gone."""
    workers = []
    if not gone(server.pid):
        workers = [child.pid for child in psutil.Process(server.pid).children()]
    server.stop()
    wait_gone([server.pid, *workers])


@contextmanager
def port_holder(port: int):
    """Hold 127.0.0.1:``port`` open in a helper Python process."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_PORT, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "listening"
        yield process
    finally:
        process.kill()
        process.wait(10)
        assert process.poll() is not None


def wait_for_unix_socket(path: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                time.sleep(0.05)
    raise TimeoutError(f"nothing accepted connections on {path}")


def wait_for_holders(port: int, masters: list[int], timeout=START_TIMEOUT) -> None:
    """Wait until each master, or one of its workers, holds a socket on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holders = set()
        for sock in read_listen_sockets().sockets:
            if sock.port == port:
                holders.update(sock.pids)
        families = set()
        for pid in holders:
            try:
                process = psutil.Process(pid)
                families.add(pid if pid in masters else process.ppid())
            except psutil.NoSuchProcess:
                continue
        if set(masters) <= families:
            return
        time.sleep(0.1)
    raise TimeoutError(f"masters {masters} do not all listen on port {port}")


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    shutil.copy(FIXTURES / "healthy" / "app.py", directory / "app.py")
    return directory


@pytest.fixture
def open_dir():
    """Yield a directory below /tmp that every user may search."""
    directory = Path(tempfile.mkdtemp(prefix="port-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def configure(deployment: Path, bind) -> None:
    (deployment / "gunicorn.conf.py").write_text(
        f"bind = {json.dumps(bind)}\nworkers = 1\n"
    )


def write_nginx(directory: Path, target: str) -> Path:
    path = directory / "nginx.conf"
    path.write_text(NGINX_CONF.format(target=target))
    return path


def doctor_live(deployment: Path, venv: Path, *extra: str) -> dict:
    report, _ = run_json(
        "check",
        "--chdir",
        str(deployment),
        "--venv",
        str(venv),
        "--select",
        "port",
        *extra,
        cwd=deployment,
        env=CLEAN_ENV,
    )
    return report


def start_gunicorn(venv: Path, deployment: Path, *args: str) -> Gunicorn:
    return Gunicorn(
        venv,
        deployment,
        "--no-control-socket",
        "--chdir",
        str(deployment),
        "-w",
        "1",
        *args,
        "app:app",
    )


def make_tree(tmp_path: Path, bind, unit_lines: str = "", site: str = "") -> Path:
    """Copy the ecommerce fixture with another bind and unit settings."""
    root = copy_fixture("ecommerce", tmp_path)
    config = root / "var/www/ecommerce_knowledge/gunicorn_config.py"
    text = config.read_text().replace(
        'bind = "127.0.0.1:5000"', f"bind = {json.dumps(bind)}"
    )
    config.write_text(text)
    if unit_lines:
        unit = root / "etc/systemd/system/ecommerce.service"
        unit.write_text(
            unit.read_text().replace("[Service]\n", f"[Service]\n{unit_lines}")
        )
    if site:
        (root / "etc/nginx/sites-available/ecommerce").write_text(site)
    return root


def doctor_tree(root: Path, *extra: str) -> dict:
    report, _ = run_json("check", "--root", str(root), "--select", "port", *extra)
    return report


SITE = """\
server {{
    listen 80;
    location / {{ proxy_pass {target}; }}
}}
"""


# --- bind parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "path"),
    [
        ("127.0.0.1:5000", "tcp", "127.0.0.1", 5000, None),
        ("[::1]:5000", "tcp", "::1", 5000, None),
        ("[::1]", "tcp", "::1", 8000, None),
        ("LocalHost", "tcp", "localhost", 8000, None),
        (":5000", "tcp", "", 5000, None),
        ("tcp://0.0.0.0:80", "tcp", "0.0.0.0", 80, None),
        ("unix:/run/shop.sock", "unix", None, None, "/run/shop.sock"),
        ("unix:///run/shop.sock", "unix", None, None, "/run/shop.sock"),
        ("unix:shop.sock", "unix", None, None, "/srv/shop/shop.sock"),
    ],
)
def test_parse_bind_as_gunicorn(text, kind, host, port, path):
    bind = parse_bind(text, "/srv/shop")
    assert bind.kind == kind
    assert bind.host == host
    assert bind.port == port
    assert bind.path == path


def test_parse_bind_matches_gunicorn_itself(venv_gunicorn_new):
    values = ["127.0.0.1:5000", "[::1]", "LocalHost", ":5000", "unix:///x.sock"]
    script = (
        "import json, sys\n"
        "from gunicorn.util import parse_address\n"
        "print(json.dumps([parse_address(v) for v in sys.argv[1:]]))\n"
    )
    result = subprocess.run(
        [str(venv_gunicorn_new / "bin" / "python"), "-c", script, *values],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = json.loads(result.stdout)
    for value, parsed in zip(values, expected, strict=True):
        bind = parse_bind(value)
        if isinstance(parsed, str):
            assert bind.path == parsed
        else:
            assert [bind.host, bind.port] == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:80a", "'80a' is not a valid port number."),
        ("fd://three", "'three' is not a valid file descriptor."),
        ("127.0.0.1:70000", "port must be 0-65535"),
    ],
)
def test_parse_bind_rejects(text, message):
    with pytest.raises(BindError, match=message.replace(".", r"\.")):
        parse_bind(text)


# --- the seed deployment --------------------------------------------------------


@pytest.mark.quiet("port-bind")
@pytest.mark.quiet("port-exposed")
@pytest.mark.quiet("port-resolution")
@pytest.mark.quiet("port-privileged")
def test_ecommerce_fixture_under_root():
    report, result = run_json(
        "check", "--root", str(FIXTURES / "ecommerce"), "--select", "port"
    )
    bind = only(report, "port-bind")
    assert bind["severity"] == "ok"
    assert bind["title"] == "gunicorn binds 127.0.0.1:5000"
    assert only(report, "port-exposed")["severity"] == "ok"
    assert only(report, "port-resolution")["severity"] == "ok"
    privileged = only(report, "port-privileged")
    assert privileged["severity"] == "ok"
    assert privileged["title"] == "no port below 1024 (ports: 5000)"
    for check_id in ("port-listener", "port-unix-socket"):
        skipped = only(report, check_id)
        assert skipped["severity"] == "skipped"
        assert "--root" in skipped["detail"]
    for check_id in ("port-socket-access", "port-socket-location"):
        assert only(report, check_id)["severity"] == "skipped"
    assert result.returncode == 0


@pytest.mark.fires("port-bind")
def test_invalid_port_stops_real_gunicorn(deployment, venv_gunicorn_new):
    configure(deployment, "127.0.0.1:80a")
    gunicorn = subprocess.run(
        [str(venv_gunicorn_new / "bin" / "gunicorn"), "--no-control-socket"]
        + ["-c", "gunicorn.conf.py", "app:app"],
        cwd=deployment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gunicorn.returncode != 0
    assert "'80a' is not a valid port number." in gunicorn.stderr

    report = doctor_live(deployment, venv_gunicorn_new, "--static")
    finding = only(report, "port-bind")
    assert finding["severity"] == "error"
    assert "'80a' is not a valid port number." in finding["title"]
    assert finding["location"]["path"] == str(deployment / "gunicorn.conf.py")
    assert only(report, "port-exposed")["severity"] == "skipped"


# --- who listens ----------------------------------------------------------------


@pytest.mark.fires("port-listener")
def test_stranger_holds_the_port(deployment, venv_gunicorn_new):
    port = free_port()
    configure(deployment, f"127.0.0.1:{port}")
    with port_holder(port) as holder:
        name = psutil.Process(holder.pid).name()
        report = doctor_live(deployment, venv_gunicorn_new)
    finding = only(report, "port-listener")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(f"127.0.0.1:{port} is held by pid {holder.pid}")
    assert (
        f'LISTEN 127.0.0.1:{port} users:(("{name}",pid={holder.pid},fd=3))'
        in finding["evidence"]
    )
    assert any(
        row.startswith(f"pid {holder.pid} user root started ")
        for row in finding["evidence"]
    )
    assert finding["fix"].startswith(f"kill -TERM {holder.pid}")
    assert f"('127.0.0.1', {port})" in finding["detail"]


@pytest.mark.quiet("port-listener")
def test_own_master_holds_the_port(deployment, venv_gunicorn_new):
    port = free_port()
    server = start_gunicorn(venv_gunicorn_new, deployment, "-b", f"127.0.0.1:{port}")
    try:
        wait_for_port(port)
        wait_for_workers(server.pid, 1)
        worker = psutil.Process(server.pid).children()[0].pid
        report, _ = run_json(
            "check",
            "--pid",
            str(server.pid),
            "--venv",
            str(venv_gunicorn_new),
            "--select",
            "port",
            cwd=deployment,
            env=CLEAN_ENV,
        )
    finally:
        stop(server)
    finding = only(report, "port-listener")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        f"127.0.0.1:{port} is held by this deployment's master pid {server.pid}"
    )
    assert f"pid={server.pid}" in finding["evidence"][0]
    assert f"pid={worker}" in finding["evidence"][0]


@pytest.mark.fires("port-listener")
def test_master_started_with_old_bind(deployment, venv_gunicorn_new):
    old_port, new_port = free_port(), free_port()
    configure(deployment, f"127.0.0.1:{old_port}")
    server = start_gunicorn(venv_gunicorn_new, deployment, "-c", "gunicorn.conf.py")
    try:
        wait_for_port(old_port)
        wait_for_workers(server.pid, 1)
        configure(deployment, f"127.0.0.1:{new_port}")
        edited = doctor_live(deployment, venv_gunicorn_new)
        # The fix the finding gives: gunicorn rereads the config and rebinds.
        os.kill(server.pid, signal.SIGHUP)
        wait_for_port(new_port)
        reloaded = doctor_live(deployment, venv_gunicorn_new)
    finally:
        stop(server)
    finding = only(edited, "port-listener")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"nothing listens on 127.0.0.1:{new_port}, but master pid {server.pid} of"
        " this app runs"
    )
    assert f"it listens on 127.0.0.1:{old_port}" in finding["detail"]
    assert finding["fix"].startswith(f"kill -HUP {server.pid}")
    assert only(reloaded, "port-listener")["severity"] == "ok"


@pytest.mark.fires("port-listener")
def test_older_master_with_reuse_port(deployment, venv_gunicorn_new):
    port = free_port()
    configure(deployment, f"127.0.0.1:{port}")
    args = ("-c", "gunicorn.conf.py", "--reuse-port")
    older = start_gunicorn(venv_gunicorn_new, deployment, *args)
    newer = None
    try:
        wait_for_holders(port, [older.pid])
        # create_time has a resolution of 10 ms; keep the order unambiguous.
        time.sleep(0.1)
        newer = start_gunicorn(venv_gunicorn_new, deployment, *args)
        wait_for_holders(port, [older.pid, newer.pid])
        report = doctor_live(deployment, venv_gunicorn_new)
    finally:
        stop(older)
        if newer is not None:
            stop(newer)
    finding = only(report, "port-listener")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"an older gunicorn master of this app still runs on 127.0.0.1:{port}:"
        f" pid {older.pid}"
    )
    assert finding["fix"] == f"kill -TERM {older.pid}"
    evidence = "\n".join(finding["evidence"])
    assert f"current: pid {newer.pid} " in evidence
    assert f"older: pid {older.pid} " in evidence


@pytest.mark.fires("port-listener")
def test_unit_exists_but_nothing_listens(deployment, venv_gunicorn_new, tmp_path):
    port = free_port()
    configure(deployment, f"127.0.0.1:{port}")
    unit = tmp_path / "shop.service"
    unit.write_text(
        "[Service]\n"
        f"WorkingDirectory={deployment}\n"
        f"ExecStart={venv_gunicorn_new}/bin/gunicorn -c gunicorn.conf.py app:app\n"
    )
    report = doctor_live(deployment, venv_gunicorn_new, "--unit", str(unit))
    finding = only(report, "port-listener")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        f"nothing listens on 127.0.0.1:{port}: shop.service is not running"
    )
    assert finding["fix"].startswith("systemctl start shop.service")


def test_nothing_runs_is_information(deployment, venv_gunicorn_new):
    port = free_port()
    configure(deployment, f"127.0.0.1:{port}")
    report = doctor_live(deployment, venv_gunicorn_new)
    finding = only(report, "port-listener")
    assert finding["severity"] == "info"
    assert finding["title"] == f"nothing listens on 127.0.0.1:{port} yet"


def test_static_mode_skips_live_checks(deployment, venv_gunicorn_new):
    configure(deployment, "127.0.0.1:5000")
    report = doctor_live(deployment, venv_gunicorn_new, "--static")
    for check_id in ("port-listener", "port-unix-socket"):
        finding = only(report, check_id)
        assert finding["severity"] == "skipped"
        assert finding["detail"] == "static mode: this check looks at the live host"
    assert only(report, "port-bind")["severity"] == "ok"


def test_inherited_descriptor_bind(deployment, venv_gunicorn_new):
    configure(deployment, "fd://3")
    report = doctor_live(deployment, venv_gunicorn_new)
    assert only(report, "port-bind")["title"] == "gunicorn binds fd://3"
    listener = only(report, "port-listener")
    assert listener["severity"] == "info"
    assert listener["title"] == "fd://3: gunicorn listens on a socket its parent passes"
    assert only(report, "port-exposed")["title"] == "gunicorn listens on no TCP address"


# --- unix sockets ---------------------------------------------------------------


@pytest.mark.quiet("port-unix-socket")
@pytest.mark.quiet("port-socket-access")
@pytest.mark.fires("port-unix-socket")
def test_sigkilled_master_leaves_stale_socket(deployment, venv_gunicorn_new, open_dir):
    path = open_dir / "shop.sock"
    configure(deployment, f"unix:{path}")
    nginx = write_nginx(open_dir, f"unix:{path}")
    server = start_gunicorn(venv_gunicorn_new, deployment, "-c", "gunicorn.conf.py")
    try:
        wait_for_unix_socket(path)
        wait_for_workers(server.pid, 1)
        live = doctor_live(deployment, venv_gunicorn_new, "--nginx", str(nginx))
        workers = [child.pid for child in psutil.Process(server.pid).children()]
        for pid in [server.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        server.process.wait(10)
        wait_gone([server.pid, *workers])
    finally:
        stop(server)
    assert path.exists()
    stale = doctor_live(deployment, venv_gunicorn_new, "--nginx", str(nginx))

    accepting = only(live, "port-unix-socket")
    assert accepting["severity"] == "ok"
    assert accepting["title"] == f"unix:{path} accepts connections"
    listener = only(live, "port-listener")
    assert listener["severity"] == "ok"
    assert f"master pid {server.pid}" in listener["title"]
    access = only(live, "port-socket-access")
    assert access["severity"] == "ok"
    assert access["title"] == f"www-data can connect to unix:{path}"
    assert f"srwxrwxrwx root root {path}" in access["evidence"]

    finding = only(stale, "port-unix-socket")
    assert finding["severity"] == "warning"
    assert finding["title"] == f"{path} is stale: nothing accepts connections on it"
    assert f"connect({path}): [Errno 111] Connection refused" in finding["evidence"]
    assert f"srwxrwxrwx root root {path}" in finding["evidence"]
    assert only(stale, "port-listener")["severity"] == "info"


@pytest.mark.fires("port-unix-socket")
def test_regular_file_in_socket_path(deployment, venv_gunicorn_new, open_dir):
    path = open_dir / "shop.sock"
    path.write_text("not a socket\n")
    configure(deployment, f"unix:{path}")
    report = doctor_live(deployment, venv_gunicorn_new)
    finding = only(report, "port-unix-socket")
    assert finding["severity"] == "error"
    assert finding["title"] == f"{path} exists but is not a socket"
    assert f"'{path}' is not a socket" in finding["detail"]


@pytest.mark.fires("port-socket-access")
def test_private_directory_blocks_nginx(deployment, venv_gunicorn_new, open_dir):
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    os.chown(private, 12345, 0)
    path = private / "shop.sock"
    configure(deployment, f"unix:{path}")
    nginx = write_nginx(open_dir, f"unix:{path}")
    report = doctor_live(deployment, venv_gunicorn_new, "--nginx", str(nginx))
    finding = only(report, "port-socket-access")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"www-data cannot search (x) the directory {private}, so nginx cannot"
        f" connect to unix:{path}"
    )
    assert f"drwx------ 12345 root {private}" in finding["evidence"]
    assert (
        f"nginx's workers run as www-data: the user directive at {nginx}:1"
        in (finding["evidence"])
    )
    assert finding["fix"].startswith(f"chmod o+x {private}")


def test_socket_mode_predicted_from_umask(deployment, venv_gunicorn_new, open_dir):
    path = open_dir / "shop.sock"
    (deployment / "gunicorn.conf.py").write_text(
        f'bind = "unix:{path}"\numask = 0o077\n'
    )
    nginx = write_nginx(open_dir, f"unix:{path}")
    report = doctor_live(deployment, venv_gunicorn_new, "--nginx", str(nginx))
    finding = only(report, "port-socket-access")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(f"www-data cannot write to {path}")
    assert any(
        row.startswith(f"srwx------ root root {path}  <- predicted")
        for row in finding["evidence"]
    )
    assert 'umask = 0o007 and group = "www-data"' in finding["fix"]


# --- exposure, resolution, privileged ports -------------------------------------


@pytest.mark.fires("port-exposed")
def test_wildcard_bind_behind_nginx(deployment, venv_gunicorn_new, tmp_path):
    port = free_port()
    configure(deployment, f"0.0.0.0:{port}")
    nginx = write_nginx(tmp_path, f"127.0.0.1:{port}")
    report = doctor_live(deployment, venv_gunicorn_new, "--nginx", str(nginx))
    finding = only(report, "port-exposed")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        f"gunicorn listens on every interface (0.0.0.0:{port}) while nginx fronts it"
    )
    assert finding["fix"] == (
        f'bind = "127.0.0.1:{port}"  (in {deployment / "gunicorn.conf.py"}:1)'
    )
    assert f"{nginx}:6: proxy_pass http://127.0.0.1:{port}" in finding["evidence"]


def test_wildcard_bind_under_root(tmp_path):
    root = make_tree(tmp_path, "0.0.0.0:5000")
    finding = only(doctor_tree(root), "port-exposed")
    assert finding["severity"] == "warning"
    assert finding["fix"].startswith('bind = "127.0.0.1:5000"')


@pytest.mark.fires("port-resolution")
def test_localhost_with_two_addresses_under_root(tmp_path):
    site = SITE.format(target="http://localhost:5000")
    root = make_tree(tmp_path, "localhost:5000", site=site)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    finding = only(doctor_tree(root), "port-resolution")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        "nginx tries 127.0.0.1, ::1 on port 5000, but gunicorn binds only"
        " 127.0.0.1 (localhost:5000)"
    )
    assert (
        f"localhost -> 127.0.0.1, ::1 ({root}/etc/hosts, in file order)"
        in (finding["evidence"])
    )
    assert finding["fix"].startswith('bind = "127.0.0.1:5000"')


def test_localhost_on_this_host(deployment, venv_gunicorn_new, tmp_path):
    port = free_port()
    configure(deployment, f"localhost:{port}")
    nginx = write_nginx(tmp_path, f"127.0.0.1:{port}")
    first_ipv4 = socket.getaddrinfo("localhost", None, socket.AF_INET)[0][4][0]
    every = socket.getaddrinfo(
        "localhost", None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG
    )
    addresses = list(dict.fromkeys(item[4][0] for item in every))
    server = start_gunicorn(venv_gunicorn_new, deployment, "-c", "gunicorn.conf.py")
    try:
        wait_for_workers(server.pid, 1)
        wait_for_holders(port, [server.pid])
        bound = {s.host for s in read_listen_sockets().sockets if s.port == port}
        report = doctor_live(deployment, venv_gunicorn_new, "--nginx", str(nginx))
    finally:
        stop(server)
    # gunicorn really binds the first IPv4 address, as the check states.
    assert bound == {first_ipv4}
    finding = only(report, "port-resolution")
    if len(addresses) == 1:
        assert finding["severity"] == "ok"
        assert finding["title"] == (
            f"localhost resolves to {first_ipv4} only; gunicorn binds"
            f" {first_ipv4}:{port}"
        )
    else:
        assert finding["severity"] == "info"
        assert f"gunicorn binds only {first_ipv4}" in finding["title"]
    assert only(report, "port-listener")["severity"] == "ok"


@pytest.mark.fires("port-privileged")
def test_port_80_as_nobody(tmp_path):
    root = make_tree(tmp_path, "127.0.0.1:80")
    unit = root / "etc/systemd/system/ecommerce.service"
    unit.write_text(unit.read_text().replace("User=www-data", "User=nobody"))
    finding = only(doctor_tree(root), "port-privileged")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "gunicorn binds 127.0.0.1:80 (below 1024) but starts as nobody, not root"
    )
    assert (
        "master starts as nobody: User= at /etc/systemd/system/ecommerce.service:6"
        in finding["evidence"]
    )
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in finding["fix"]
    assert "[Errno 13] Permission denied" in finding["detail"]


def test_port_80_with_capability(tmp_path):
    root = make_tree(
        tmp_path,
        "127.0.0.1:80",
        unit_lines="AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
    )
    finding = only(doctor_tree(root), "port-privileged")
    assert finding["severity"] == "ok"
    assert "with CAP_NET_BIND_SERVICE" in finding["detail"]


# --- systemd: socket activation, RuntimeDirectory, PrivateTmp --------------------


def test_socket_unit_replaces_bind(tmp_path):
    root = make_tree(tmp_path, "127.0.0.1:5000")
    (root / "etc/systemd/system/ecommerce.socket").write_text(
        "[Socket]\nListenStream=5000\n"
    )
    report = doctor_tree(root)
    bind = only(report, "port-bind")
    assert bind["severity"] == "warning"
    assert bind["title"] == (
        "bind (127.0.0.1:5000) is ignored: systemd passes the sockets of"
        " /etc/systemd/system/ecommerce.socket"
    )
    exposed = only(report, "port-exposed")
    assert exposed["severity"] == "warning"
    assert exposed["title"] == (
        "gunicorn listens on every interface ([::]:5000) while nginx fronts it"
    )
    assert exposed["fix"].startswith("ListenStream=127.0.0.1:5000  (in /etc/systemd/")


def test_socket_unit_with_accept(tmp_path):
    root = make_tree(tmp_path, "127.0.0.1:5000")
    (root / "etc/systemd/system/ecommerce.socket").write_text(
        "[Socket]\nListenStream=127.0.0.1:5000\nAccept=yes\n"
    )
    findings = findings_of(doctor_tree(root), "port-bind")
    titles = [f["title"] for f in findings if f["severity"] == "error"]
    assert titles == ["/etc/systemd/system/ecommerce.socket sets Accept=yes"]


@pytest.mark.quiet("port-socket-location")
def test_socket_in_runtime_directory(tmp_path):
    root = make_tree(
        tmp_path,
        "unix:/run/ecommerce/app.sock",
        unit_lines="RuntimeDirectory=ecommerce\n",
        site=SITE.format(target="http://unix:/run/ecommerce/app.sock"),
    )
    report = doctor_tree(root)
    location = only(report, "port-socket-location")
    assert location["severity"] == "ok"
    assert "/run/ecommerce is the unit's RuntimeDirectory" in location["detail"]
    access = only(report, "port-socket-access")
    assert access["severity"] == "ok"
    assert (
        "drwxr-xr-x www-data www-data /run/ecommerce  <- predicted: systemd creates"
        " RuntimeDirectory with mode 0755" in access["evidence"]
    )


@pytest.mark.fires("port-socket-location")
def test_socket_under_run_without_runtime_directory(tmp_path):
    root = make_tree(tmp_path, "unix:/run/gunicorn/app.sock")
    finding = only(doctor_tree(root), "port-socket-location")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        "/run/gunicorn is under /run, and nothing recreates it after a reboot"
    )
    assert finding["fix"].startswith("RuntimeDirectory=gunicorn  (in [Service] of")


@pytest.mark.fires("port-socket-location")
def test_tmp_socket_with_private_tmp_nginx(tmp_path):
    root = make_tree(
        tmp_path,
        "unix:/tmp/ecommerce.sock",
        site=SITE.format(target="http://unix:/tmp/ecommerce.sock"),
    )
    nginx_unit = root / "lib/systemd/system/nginx.service"
    nginx_unit.parent.mkdir(parents=True)
    nginx_unit.write_text("[Service]\nPrivateTmp=yes\n")
    finding = only(doctor_tree(root), "port-socket-location")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "/tmp/ecommerce.sock is under /tmp, but nginx runs with PrivateTmp=yes"
    )
    assert "unix:/run/ecommerce/ecommerce.sock" in finding["fix"]


# --- the doctor as an unprivileged user -------------------------------------------


@pytest.fixture(scope="session")
def nobody_python():
    """Return a Python with the doctor's dependencies that uid 65534 can run.

    The test interpreter may live in root's home, so the venv is made from
    the system interpreter in a directory everyone can read.
    """
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    if shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"needs setpriv(1) and {SYSTEM_PYTHON}")
    base = Path(tempfile.mkdtemp(prefix="port-nobody-venv-"))
    base.chmod(0o755)
    python = base / "venv" / "bin" / "python"
    subprocess.run(
        [SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(base / "venv")], check=True
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install"]
        + ["--quiet", "--disable-pip-version-check", *project["dependencies"]],
        check=True,
        capture_output=True,
    )
    yield python
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.fires("port-listener")
def test_unprivileged_doctor_cannot_see_holder(open_dir, nobody_python):
    deployment = open_dir / "shop"
    deployment.mkdir(mode=0o755)
    shutil.copy(FIXTURES / "healthy" / "app.py", deployment / "app.py")
    port = free_port()
    configure(deployment, f"127.0.0.1:{port}")
    with port_holder(port) as holder:
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            + [str(nobody_python), "-m", "doctor", "check", "--chdir", str(deployment)]
            + ["--select", "port-listener", "--format", "json"],
            cwd=REPO,
            env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert gone(holder.pid) is False
    assert "Traceback" not in result.stderr, result.stderr
    finding = only(json.loads(result.stdout), "port-listener")
    assert finding["severity"] == "warning"
    assert finding["title"] == (
        f"127.0.0.1:{port} is held by a process the doctor cannot see"
    )
    assert finding["evidence"] == [f"LISTEN 127.0.0.1:{port} uid=0"]


@pytest.mark.fires("port-listener")
def test_master_started_with_other_bind(tmp_path, venv_gunicorn_new):
    from tests.helpers import copy_fixture, run_json
    from tests.servers import Gunicorn, free_port, wait_for_port, wait_for_workers

    deployment = copy_fixture("healthy", tmp_path)
    configured, running = free_port(), free_port()
    config = deployment / "gunicorn.conf.py"
    config.write_text(
        config.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{configured}")
    )
    server = Gunicorn(
        venv_gunicorn_new,
        deployment,
        "-c",
        "gunicorn.conf.py",
        "-b",
        f"127.0.0.1:{running}",
        "app:app",
    )
    try:
        wait_for_port(running)
        wait_for_workers(server.pid, 2)
        report, _ = run_json(
            "check",
            "--venv",
            str(venv_gunicorn_new),
            "--select",
            "port-listener",
            cwd=deployment,
        )
    finally:
        server.stop()
    (finding,) = [f for f in report["findings"] if f["severity"] == "error"]
    assert f"nothing listens on 127.0.0.1:{configured}" in finding["title"]
    assert f"127.0.0.1:{running}" in finding["detail"]
    assert "gunicorn.ctl" not in finding["detail"]
    assert f"without -b 127.0.0.1:{running}" in finding["fix"]
