"""Tests for the upstream probe, against real servers on loopback.

Each misbehaving upstream is a small raw-socket server in a python3
subprocess, started by the test and killed by its pid. Real gunicorn masters
cover the responses of a working deployment.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from doctor import upstream
from doctor.upstream import Address, is_loopback, parse_bind, parse_size, probe
from tests.helpers import REPO
from tests.servers import Gunicorn, free_port, wait_for_port

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

# A raw-socket HTTP server that misbehaves in the way argv[1] names. It listens on an
# ephemeral port of argv[2] ("127.0.0.1" or "::1") or on the unix socket path
# argv[2], prints the port or path once it listens, and serves connections one
# at a time. A request for /__last returns the previous request, and every
# response carries X-Connection-Count, so a test can tell what it received.
SERVER = r"""
import socket
import struct
import sys
import time

mode, where = sys.argv[1], sys.argv[2]
if where.startswith("/"):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(where)
    ready = where
else:
    family = socket.AF_INET6 if ":" in where else socket.AF_INET
    listener = socket.socket(family)
    listener.bind((where, 0))
    ready = str(listener.getsockname()[1])
listener.listen(16)
print(ready, flush=True)


def head(status, headers):
    lines = [f"HTTP/1.1 {status}"] + headers
    return "".join(line + "\r\n" for line in lines) + "\r\n"


open_connections = []
count = 0
previous = b""
while True:
    conn, _ = listener.accept()
    count += 1
    conn.settimeout(5)
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            break
        request += chunk
    headers = [f"X-Connection-Count: {count}", "Connection: close"]
    if request.startswith(b"GET /__last "):
        body = previous
        conn.sendall(
            head("200 OK", headers + [f"Content-Length: {len(body)}"]).encode()
            + body
        )
        conn.close()
        continue
    previous = request
    if mode == "silent":
        open_connections.append(conn)
        continue
    if mode == "close":
        conn.close()
        continue
    if mode == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        continue
    if mode == "ssh":
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        conn.close()
        continue
    if mode == "tls":
        conn.sendall(b"\x15\x03\x01\x00\x02\x02\x46")
        conn.close()
        continue
    if mode == "truncated":
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Half: 1\r\n")
        conn.close()
        continue
    status = "200 OK"
    if mode == "502":
        status = "502 Bad Gateway"
    if mode == "500":
        status = "500 Internal Server Error"
    if mode == "big-headers":
        headers += [f"X-Filler-{i}: " + "a" * 1000 for i in range(10)]
    if mode == "slow":
        time.sleep(1.5)
    if mode == "redirect":
        status = "301 Moved Permanently"
        headers.append("Location: http://192.0.2.1/elsewhere")
    # The body never ends, so a probe that read it would hang.
    headers.append("Content-Length: 1000000")
    conn.sendall(head(status, headers).encode() + b"partial body")
    open_connections.append(conn)
"""

APP = """\
import os


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/die":
        os._exit(1)
    if path == "/boom":
        raise RuntimeError("the application failed")
    body = b"hello"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
"""


def head_size(status: str, headers: list[str]) -> int:
    """Return the byte size of the header block SERVER sends."""
    lines = [f"HTTP/1.1 {status}"] + headers
    return sum(len(line) + 2 for line in lines) + 2


@pytest.fixture
def serve(tmp_path):
    """Start SERVER subprocesses in a mode and return their address."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    started: list[subprocess.Popen] = []

    def start(mode: str, where: str = "127.0.0.1") -> Address:
        process = subprocess.Popen(
            [sys.executable, str(script), mode, where],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        ready = process.stdout.readline().strip()
        assert ready, f"the {mode} server exited with {process.wait()}"
        if where.startswith("/"):
            return Address("unix", path=ready)
        return Address("tcp", host=where, port=int(ready))

    yield start
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()


def last_request(address: Address) -> tuple[int, bytes]:
    """Return the connection count and the request SERVER received before this."""
    if address.kind == "unix":
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(address.path)
    else:
        conn = socket.create_connection((address.host, address.port))
    with conn:
        conn.settimeout(5)
        conn.sendall(b"GET /__last HTTP/1.1\r\nHost: test\r\n\r\n")
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    count = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.startswith(b"X-Connection-Count:")
    )
    return count, body


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any connect() or name lookup from this process."""

    def forbidden(*args, **kwargs):
        pytest.fail(f"a connection or name lookup was attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)


# Outcomes of servers that fail before or instead of an HTTP response.


def test_refused_free_port():
    port = free_port()
    outcome = probe(Address("tcp", host="127.0.0.1", port=port))
    assert outcome.verdict == "refused"
    assert outcome.status is None
    assert outcome.evidence == [
        f"connect() to 127.0.0.1:{port}: [Errno 111] Connection refused"
    ]
    assert f"127.0.0.1:{port}" in outcome.detail


def test_refused_probe_leaves_http_client_unloaded(serve):
    """Only an accepted connection pays for importing requests."""
    script = (
        "import sys\n"
        "from doctor.upstream import Address, probe\n"
        "outcome = probe(Address('tcp', host='127.0.0.1', port=int(sys.argv[1])))\n"
        "print(outcome.verdict, 'requests' in sys.modules)\n"
    )

    def verdict_and_import(port: int) -> str:
        result = subprocess.run(
            [sys.executable, "-c", script, str(port)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()

    assert verdict_and_import(free_port()) == "refused False"
    assert verdict_and_import(serve("200").port) == "ok True"


def test_unix_socket_missing(tmp_path):
    path = tmp_path / "missing.sock"
    outcome = probe(Address("unix", path=str(path)))
    assert outcome.verdict == "socket_missing"
    assert str(path) in outcome.detail
    assert "No such file or directory" in outcome.evidence[0]


def test_unix_socket_stale(tmp_path):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(path))
        outcome = probe(Address("unix", path=str(path)))
    assert outcome.verdict == "refused"
    assert "no process accepts connections" in outcome.detail


def test_accepts_never_responds(serve):
    address = serve("silent")
    outcome = probe(address, read_timeout=1)
    assert outcome.verdict == "no_response"
    assert 1 <= outcome.elapsed < 5
    assert "busy or hung" in outcome.detail


def test_closes_without_response(serve):
    outcome = probe(serve("close"))
    assert outcome.verdict == "closed"
    assert "upstream prematurely closed connection" in outcome.detail


def test_resets_connection(serve):
    outcome = probe(serve("reset"))
    assert outcome.verdict == "reset"
    assert "Connection reset by peer" in outcome.evidence[0]


def test_closes_mid_headers(serve):
    outcome = probe(serve("truncated"))
    assert outcome.verdict == "closed"
    assert outcome.status == 200
    assert "in the middle of the response headers" in outcome.detail


def test_tcp_backlog_full_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        waiting = fill_backlog(socket.AF_INET, ("127.0.0.1", port))
        try:
            started = time.monotonic()
            outcome = probe(
                Address("tcp", host="127.0.0.1", port=port), connect_timeout=0.5
            )
            took = time.monotonic() - started
        finally:
            for conn in waiting:
                conn.close()
    assert outcome.verdict == "connect_timeout"
    assert 0.5 <= took < 3
    assert "listen backlog is full" in outcome.detail


def test_unix_backlog_full(tmp_path):
    path = str(tmp_path / "busy.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(0)
        waiting = fill_backlog(socket.AF_UNIX, path)
        try:
            outcome = probe(Address("unix", path=path), connect_timeout=0.5)
        finally:
            for conn in waiting:
                conn.close()
    assert outcome.verdict == "backlog_full"
    assert "Resource temporarily unavailable" in outcome.evidence[0]


def fill_backlog(family: int, where) -> list[socket.socket]:
    """Connect to a listener that never accepts until its queue is full."""
    waiting = []
    for _ in range(64):
        conn = socket.socket(family)
        conn.settimeout(0.3)
        try:
            conn.connect(where)
        except OSError:
            conn.close()
            return waiting
        waiting.append(conn)
    for conn in waiting:
        conn.close()
    raise AssertionError(f"the listen queue of {where} never filled up")


@pytest.mark.parametrize("mode", ["ssh", "tls"])
def test_response_not_http(serve, mode):
    outcome = probe(serve(mode))
    assert outcome.verdict == "not_http"
    assert outcome.status is None
    assert ("look like TLS" in outcome.detail) == (mode == "tls")


def test_unix_permission_denied_for_nobody(serve, nobody_python, private_dir):
    inner = private_dir / "run"
    inner.mkdir()
    address = serve("200", str(inner / "app.sock"))
    os.chmod(address.path, 0o777)

    def probe_as_nobody() -> list[str]:
        """Return the verdict and the evidence of a probe run as uid 65534."""
        script = (
            "import sys\n"
            "from doctor.upstream import Address, probe\n"
            "outcome = probe(Address('unix', path=sys.argv[1]), read_timeout=5)\n"
            "print(outcome.verdict, *outcome.evidence, sep='\\n')\n"
        )
        result = subprocess.run(
            ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY)]
            + ["--clear-groups", str(nobody_python), "-c", script, address.path],
            env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    # The same user gets a response while the directory and socket are open.
    inner.chmod(0o755)
    assert probe_as_nobody()[0] == "ok"

    inner.chmod(0o700)
    verdict, evidence = probe_as_nobody()[:2]
    assert verdict == "permission_denied"
    assert "[Errno 13] Permission denied" in evidence

    inner.chmod(0o755)
    os.chmod(address.path, 0o755)
    verdict, evidence = probe_as_nobody()[:2]
    assert verdict == "permission_denied"
    assert "[Errno 13] Permission denied" in evidence


@pytest.fixture
def private_dir():
    """Yield a directory that uid 65534 can enter, outside pytest's tmp tree.

    pytest's tmp tree is readable by root only, so uid 65534 could not reach a
    socket inside it whatever the socket's own directory allows.
    """
    directory = Path(tempfile.mkdtemp(prefix="upstream-probe-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def nobody_python():
    """Return a Python with requests that uid 65534 can run.

    The test runner's own interpreter may live in root's home, so a venv of
    the system interpreter is built in a directory everyone can read.
    """
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    if not os.access(SYSTEM_PYTHON, os.X_OK) or shutil.which("setpriv") is None:
        pytest.skip(f"needs {SYSTEM_PYTHON} and setpriv")
    directory = Path(tempfile.mkdtemp(prefix="upstream-venv-"))
    directory.chmod(0o755)
    venv = directory / "venv"
    subprocess.run(
        [SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
        + ["install", "--quiet", "--disable-pip-version-check", "requests"],
        check=True,
        capture_output=True,
    )
    yield venv / "bin" / "python"
    shutil.rmtree(directory)


# Outcomes of servers that send an HTTP response.


@pytest.mark.parametrize("mode", ["502", "500"])
def test_server_error_status(serve, mode):
    outcome = probe(serve(mode))
    assert outcome.verdict == "http_5xx"
    assert outcome.status == int(mode)
    assert outcome.evidence[0].startswith(f"HTTP/1.1 {mode}")


def test_headers_over_buffer_size(serve):
    address = serve("big-headers")
    headers = ["X-Connection-Count: 1", "Connection: close"]
    headers += [f"X-Filler-{i}: " + "a" * 1000 for i in range(10)]
    headers.append("Content-Length: 1000000")
    expected = head_size("200 OK", headers)
    outcome = probe(address, buffer_size=4096)
    assert outcome.verdict == "headers_too_big"
    assert outcome.header_bytes == expected
    assert outcome.status == 200
    assert "upstream sent too big header" in outcome.detail


def test_big_headers_without_buffer_size(serve):
    outcome = probe(serve("big-headers"))
    assert outcome.verdict == "ok"
    assert outcome.header_bytes > 10_000


def test_headers_within_buffer_size(serve):
    outcome = probe(serve("200"), buffer_size=4096)
    assert outcome.verdict == "ok"
    expected = head_size(
        "200 OK",
        ["X-Connection-Count: 1", "Connection: close", "Content-Length: 1000000"],
    )
    assert outcome.header_bytes == expected


def test_slow_response(serve):
    outcome = probe(serve("slow"), slow_after=1)
    assert outcome.verdict == "slow"
    assert outcome.status == 200
    assert outcome.elapsed >= 1.5
    assert "1 s limit" in outcome.detail


def test_slow_response_without_limit(serve):
    outcome = probe(serve("slow"))
    assert outcome.verdict == "ok"


def test_redirect_not_followed(serve):
    address = serve("redirect")
    outcome = probe(address)
    assert outcome.verdict == "ok"
    assert outcome.status == 301
    assert "Location: http://192.0.2.1/elsewhere" in outcome.evidence
    count, _ = last_request(address)
    assert count == 2, "the probe opened more than one connection"


def test_request_as_nginx_sends_it(serve):
    address = serve("200")
    probe(address, path="/health?full=1")
    _, request = last_request(address)
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /health?full=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{address.port}" in lines
    assert "Connection: close" in lines


def test_request_host_header(serve):
    address = serve("200")
    probe(address, host_header="example.com")
    _, request = last_request(address)
    assert "Host: example.com" in request.decode().split("\r\n")


def test_unix_request_host_localhost(serve, tmp_path):
    address = serve("200", str(tmp_path / "app.sock"))
    outcome = probe(address)
    assert outcome.verdict == "ok"
    _, request = last_request(address)
    assert "Host: localhost" in request.decode().split("\r\n")


def test_localhost_name_connects_to_loopback(serve):
    address = serve("200")
    named = Address("tcp", host="localhost", port=address.port)
    outcome = probe(named)
    assert outcome.verdict == "ok"
    _, request = last_request(address)
    assert f"Host: localhost:{address.port}" in request.decode().split("\r\n")


def test_ipv6_loopback(serve):
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        with socket.socket(socket.AF_INET6) as check:
            check.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 is not available: {exc}")
    address = serve("200", "::1")
    outcome = probe(address)
    assert outcome.verdict == "ok"
    _, request = last_request(address)
    assert f"Host: [::1]:{address.port}" in request.decode().split("\r\n")


# A real gunicorn master, bound to TCP and to a unix socket at once.


@pytest.fixture(scope="module")
def gunicorn(venv_gunicorn_new, tmp_path_factory):
    directory = tmp_path_factory.mktemp("upstream-gunicorn")
    (directory / "app.py").write_text(APP)
    port = free_port()
    socket_path = directory / "app.sock"
    server = Gunicorn(
        venv_gunicorn_new,
        directory,
        "-b",
        f"127.0.0.1:{port}",
        "-b",
        f"unix:{socket_path}",
        "-w",
        "1",
        "app:app",
    )
    try:
        wait_for_port(port)
        wait_for_unix_socket(socket_path)
        yield (
            Address("tcp", host="127.0.0.1", port=port),
            Address("unix", path=str(socket_path)),
        )
    finally:
        server.stop()


def wait_for_unix_socket(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(path))
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing accepted connections on unix:{path}")


def test_gunicorn_tcp_ok(gunicorn):
    tcp, _ = gunicorn
    outcome = probe(tcp)
    assert outcome.verdict == "ok"
    assert outcome.status == 200
    assert outcome.header_bytes > 0
    assert outcome.evidence[0] == "HTTP/1.1 200 OK"


def test_gunicorn_unix_ok(gunicorn):
    _, unix = gunicorn
    outcome = probe(unix)
    assert outcome.verdict == "ok"
    assert outcome.status == 200
    assert outcome.header_bytes > 0


def test_gunicorn_application_error(gunicorn):
    tcp, _ = gunicorn
    outcome = probe(tcp, path="/boom")
    assert outcome.verdict == "http_5xx"
    assert outcome.status == 500


def test_gunicorn_worker_dies(gunicorn):
    _, unix = gunicorn
    outcome = probe(unix, path="/die")
    assert outcome.verdict == "closed"
    assert outcome.status is None


# Addresses off this host are never probed.


@pytest.mark.parametrize(
    "host", ["192.0.2.1", "2001:db8::1", "app.example.com", "0.0.0.0"]
)
def test_remote_address_not_probed(no_network, host):
    outcome = probe(Address("tcp", host=host, port=8000))
    assert outcome.verdict == "not_probed"
    assert outcome.status is None
    assert outcome.elapsed is None
    assert "probes only this host" in outcome.detail


def test_no_network_guard_catches_probe(no_network):
    # Without this, the not_probed test could pass with a guard that misses
    # the connections requests makes.
    with pytest.raises(pytest.fail.Exception):
        probe(Address("tcp", host="127.0.0.1", port=free_port()))


# Parsing of binds, sizes and addresses.


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8001", Address("tcp", host="127.0.0.1", port=8001)),
        ("[::1]:8002", Address("tcp", host="::1", port=8002)),
        ("[::1]", Address("tcp", host="::1", port=8000)),
        ("localhost", Address("tcp", host="localhost", port=8000)),
        ("LocalHost:9000", Address("tcp", host="localhost", port=9000)),
        ("tcp://127.0.0.1:8003", Address("tcp", host="127.0.0.1", port=8003)),
        ("0.0.0.0:80", Address("tcp", host="127.0.0.1", port=80)),
        ("[::]:8004", Address("tcp", host="::1", port=8004)),
        (":8005", Address("tcp", host="127.0.0.1", port=8005)),
        ("unix:/run/app.sock", Address("unix", path="/run/app.sock")),
        ("unix:///run/app.sock", Address("unix", path="/run/app.sock")),
        ("unix:app.sock", Address("unix", path="app.sock")),
        ("fd://3", None),
    ],
)
def test_parse_bind(bind, expected):
    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("127.0.0.1:", "port '' is not a number"),
        ("::1:8000", "an IPv6 address needs brackets"),
        ("unix:", "the unix socket path is empty"),
        ("fd://stdin", "'stdin' is not a file descriptor number"),
    ],
)
def test_parse_bind_invalid(bind, message):
    with pytest.raises(ValueError, match=message) as raised:
        parse_bind(bind)
    assert repr(bind) in str(raised.value)


def test_parse_bind_matches_gunicorn(venv_gunicorn_new):
    binds = ["127.0.0.1:8001", "[::1]:8002", "[::1]", "LocalHost", "tcp://h:1"]
    binds += ["unix:/run/app.sock", "unix:///run/app.sock"]
    script = (
        "import sys\n"
        "from gunicorn.util import parse_address\n"
        "for bind in sys.argv[1:]:\n"
        "    print(repr(parse_address(bind)))\n"
    )
    result = subprocess.run(
        [str(venv_gunicorn_new / "bin" / "python"), "-c", script, *binds],
        capture_output=True,
        text=True,
        check=True,
    )
    for bind, line in zip(binds, result.stdout.splitlines(), strict=True):
        gunicorn_address = ast.literal_eval(line)
        address = parse_bind(bind)
        if isinstance(gunicorn_address, str):
            assert address == Address("unix", path=gunicorn_address), bind
        else:
            assert (address.host, address.port) == gunicorn_address, bind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4k", 4096),
        ("8K", 8192),
        ("1m", 1048576),
        ("512", 512),
        (" 16k ", 16384),
        ("4kb", None),
        ("1g", None),
        ("-4k", None),
        ("", None),
        ("k", None),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (Address("tcp", host="127.0.0.1", port=1), True),
        (Address("tcp", host="127.8.9.10", port=1), True),
        (Address("tcp", host="::1", port=1), True),
        (Address("tcp", host="::ffff:127.0.0.1", port=1), True),
        (Address("tcp", host="localhost", port=1), True),
        (Address("tcp", host="api.localhost", port=1), True),
        (Address("tcp", host="10.0.0.1", port=1), False),
        (Address("tcp", host="::ffff:10.0.0.1", port=1), False),
        (Address("tcp", host="0.0.0.0", port=1), False),
        (Address("tcp", host="app.example.com", port=1), False),
        (Address("unix", path="/run/app.sock"), True),
    ],
)
def test_is_loopback(no_network, address, expected):
    assert is_loopback(address) is expected


def test_is_loopback_hosts_file(no_network, monkeypatch, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        "127.0.1.1 app-backend  # the app\n"
        "127.0.0.1 mixed\n"
        "192.0.2.7 mixed\n"
        "192.0.2.8 localhost.example\n"
    )
    monkeypatch.setattr(upstream, "HOSTS_FILE", str(hosts))
    assert is_loopback(Address("tcp", host="app-backend", port=1))
    assert is_loopback(Address("tcp", host="APP-BACKEND.", port=1))
    assert not is_loopback(Address("tcp", host="mixed", port=1))
    assert not is_loopback(Address("tcp", host="localhost.example", port=1))
    assert not is_loopback(Address("tcp", host="the", port=1))


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("tcp", host="127.0.0.1", port=8000), "127.0.0.1:8000"),
        (Address("tcp", host="::1", port=8000), "[::1]:8000"),
        (Address("unix", path="/run/app.sock"), "unix:/run/app.sock"),
    ],
)
def test_address_describe(address, text):
    assert address.describe() == text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "health"}, "invalid request path 'health'"),
        ({"path": "/a b"}, "invalid request path '/a b'"),
        ({"host_header": "a\r\nX-Injected: 1"}, "invalid Host header"),
        ({"read_timeout": 0}, "invalid read_timeout 0"),
        ({"connect_timeout": float("nan")}, "invalid connect_timeout nan"),
        ({"buffer_size": 0}, "invalid buffer_size 0"),
    ],
)
def test_probe_invalid_arguments(no_network, kwargs, message):
    with pytest.raises(ValueError, match=message):
        probe(Address("tcp", host="127.0.0.1", port=8000), **kwargs)


@pytest.mark.parametrize(
    "address",
    [
        Address("tcp", host="127.0.0.1", port=None),
        Address("tcp", host="127.0.0.1", port=70000),
        Address("udp", host="127.0.0.1", port=53),
        Address("unix", path=""),
    ],
)
def test_probe_invalid_address(no_network, address):
    with pytest.raises(ValueError, match="invalid address"):
        probe(address)
