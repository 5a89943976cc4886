"""``gunicorn-doctor triage`` with a real nginx in front of a real gunicorn.

Each test writes a deployment and an nginx prefix under a fresh directory in
/tmp, because pytest's tmp_path sits under a 0700 directory that nginx's
www-data workers cannot search. It starts both servers and stops them by pid,
produces the fault for real, sends a few requests through nginx on loopback
so that nginx and gunicorn write their real log lines, and then runs
``gunicorn-doctor triage``. Nothing is mocked.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import findings_of, run_doctor, run_json
from tests.nginx import (
    Nginx,
    nginx_available,
    validate_config,
    wait_until,
    worker_user,
    write_config,
)
from tests.servers import Gunicorn, free_port, wait_for_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not nginx_available(), reason="nginx is not installed"),
]

APP = """
import os
import signal
import time

from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def index():
    return "hello"


@app.route("/slow")
def slow():
    time.sleep(float(request.args.get("seconds", "3")))
    return "slow"


@app.route("/stuck")
def stuck():
    # A worker stuck in C code never returns to the interpreter, so the
    # Python handler of the SIGABRT that gunicorn's timeout sends never runs.
    # Blocking the signal behaves the same way.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    time.sleep(5)
    return "stuck"


@app.route("/die")
def die():
    os.kill(os.getpid(), signal.SIGKILL)


@app.route("/crash")
def crash():
    # As a failed assertion in a C extension or a stray os._exit() does.
    os._exit(1)


@app.route("/segfault")
def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


@app.route("/big")
def big():
    return "big", 200, {"X-Big": "a" * 10240}
"""
BROKEN_APP = 'raise RuntimeError("database URL is not configured")\n'
REQUEST_TIMEOUT = 15.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class Site:
    """A deployment directory, its gunicorn and the nginx in front of it."""

    def __init__(self, base: Path, venv: Path):
        self.base = base
        self.venv = venv
        self.app = base / "app"
        self.app.mkdir()
        self.app.chmod(0o755)
        (self.app / "app.py").write_text(APP)
        self.config = self.app / "gunicorn.conf.py"
        self.errorlog = self.app / "error.log"
        self.prefix = base / "nginx"
        self.nginx_port = free_port()
        self.nginx_conf: Path | None = None
        self.nginx: Nginx | None = None
        self.gunicorn: Gunicorn | None = None
        self.bind = ""
        # Every server started, gunicorn masters before nginx, to stop them all.
        self.started: list[Gunicorn | Nginx] = []

    # --- gunicorn --------------------------------------------------------

    def configure(self, bind: str, *, timeout: int = 30, workers: int = 1) -> None:
        """Write gunicorn.conf.py, which the doctor reads with -c."""
        self.bind = bind
        self.config.write_text(
            f"bind = [{bind!r}]\n"
            f"workers = {workers}\n"
            f"timeout = {timeout}\n"
            f"errorlog = {str(self.errorlog)!r}\n"
        )

    def start_gunicorn(self, *, expect_exit: bool = False) -> Gunicorn:
        """Start gunicorn and wait until its bind accepts, or until it exits."""
        self.gunicorn = Gunicorn(
            self.venv,
            self.app,
            "-c",
            str(self.config),
            # gunicorn 27.0.1 opens a control socket under ~/.gunicorn by
            # default, which masters started side by side would share.
            "--no-control-socket",
            "app:app",
        )
        self.started.insert(0, self.gunicorn)
        process = self.gunicorn.process
        if expect_exit:
            process.wait(START_TIMEOUT)
            return self.gunicorn
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts():
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{self.gunicorn.log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not listen on {self.bind} in time")
            time.sleep(0.05)
        return self.gunicorn

    def _accepts(self) -> bool:
        if self.bind.startswith("unix:"):
            family, address = socket.AF_UNIX, self.bind[len("unix:") :]
        else:
            host, port = self.bind.rsplit(":", 1)
            family, address = socket.AF_INET, (host, int(port))
        with socket.socket(family) as client:
            client.settimeout(0.5)
            try:
                client.connect(address)
            except OSError:
                return False
        return True

    # --- nginx -----------------------------------------------------------

    def start_nginx(self, upstream: str, location: str = "") -> Nginx:
        """Start nginx on a loopback port, forwarding every request to ``upstream``."""
        self.nginx_conf = self.write_nginx_conf(upstream, location)
        checked = validate_config(self.nginx_conf)
        assert checked.returncode == 0, checked.stderr
        self.nginx = Nginx(self.nginx_conf)
        self.started.append(self.nginx)
        wait_for_port(self.nginx_port)
        return self.nginx

    def write_nginx_conf(self, upstream: str, location: str = "") -> Path:
        self.prefix.mkdir(exist_ok=True)
        self.prefix.chmod(0o755)
        server = f"""
    server {{
        listen 127.0.0.1:{self.nginx_port};
        server_name example.test;
        location / {{
            proxy_pass http://{upstream};
            {location}
        }}
    }}"""
        return write_config(self.prefix, server, user=worker_user())

    def request(self, path: str = "/") -> int:
        """Send one GET through nginx and return the status of its response."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.nginx_port, timeout=REQUEST_TIMEOUT
        )
        try:
            connection.request("GET", path, headers={"Host": "example.test"})
            return connection.getresponse().status
        finally:
            connection.close()

    def nginx_log(self, text: str) -> list[str]:
        """Return the lines of nginx's error log that contain ``text``."""
        log = self.prefix / "logs" / "error.log"
        return [line for line in log.read_text().splitlines() if text in line]

    def gunicorn_log(self, text: str) -> list[str]:
        return [line for line in self.errorlog.read_text().splitlines() if text in line]

    # --- the doctor ------------------------------------------------------

    def target_args(self) -> list[str]:
        return [
            "app:app",
            "--chdir",
            str(self.app),
            "--venv",
            str(self.venv),
            "-c",
            str(self.config),
            "--nginx",
            str(self.nginx_conf),
        ]

    def triage(self, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
        """Run ``triage --format json`` on this site and parse its report."""
        return run_json("triage", *self.target_args(), "--since", "10m", *args)

    def triage_text(self, output_format: str) -> subprocess.CompletedProcess:
        result = run_doctor(
            "triage",
            *self.target_args(),
            "--since",
            "10m",
            "--format",
            output_format,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def check_502(self) -> tuple[dict, subprocess.CompletedProcess]:
        return run_json("check", *self.target_args(), "--select", "upstream-502")

    # --- cleanup ---------------------------------------------------------

    def stop(self) -> None:
        """Stop every server by pid, then assert that none of their processes lives."""
        left = []
        for server in self.started:
            try:
                children = psutil.Process(server.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            server.stop(timeout=STOP_TIMEOUT)
            _, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
            if server.process.poll() is None:
                alive.append(server.process)
            left += alive
        assert left == [], f"still running after the stop: {left}"


@pytest.fixture
def site(venv_gunicorn_new):
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="doctor-triage-"))
    base.chmod(0o755)
    deployment = Site(base, venv_gunicorn_new)
    try:
        yield deployment
    finally:
        try:
            deployment.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def tcp_bind() -> str:
    return f"127.0.0.1:{free_port()}"


def quoted(lines: list[str]) -> list[str]:
    """Return log lines as the evidence quotes them, indented under their count."""
    return [f"  {line}" for line in lines]


def ruled_out(report: dict, cause: str) -> str:
    """Return why ``cause`` was ruled out; fail when it was not."""
    reasons = {item["cause"]: item["why"] for item in report["ruled_out"]}
    assert cause in reasons, f"{cause} is not ruled out: {report['other_causes']}"
    return reasons[cause]


def other_cause(report: dict, cause: str) -> dict:
    found = [c for c in report["other_causes"] if c["cause"] == cause]
    assert found, f"{cause} not among {[c['cause'] for c in report['other_causes']]}"
    return found[0]


# --- a healthy site ----------------------------------------------------------


@pytest.mark.quiet("upstream-502")
def test_healthy_site_has_no_verdict(site):
    site.configure(tcp_bind())
    site.start_gunicorn()
    site.start_nginx(site.bind)
    assert [site.request("/") for _ in range(3)] == [200, 200, 200]

    report, result = site.triage("--through-nginx")
    assert result.returncode == 0, result.stdout
    assert report["verdict"] is None
    assert report["other_causes"] == []
    probes = {probe["through_nginx"]: probe for probe in report["probes"]}
    assert probes[False]["verdict"] == "ok"
    assert probes[True]["status"] == 200
    assert "master pid" in ruled_out(report, "gunicorn-down")

    checked, result = site.check_502()
    (finding,) = findings_of(checked, "upstream-502")
    assert finding["severity"] == "ok"
    assert result.returncode == 0


# --- 502 causes --------------------------------------------------------------


def test_gunicorn_down(site):
    site.configure(tcp_bind())
    site.start_gunicorn()
    site.start_nginx(site.bind)
    site.gunicorn.stop()
    assert [site.request("/") for _ in range(2)] == [502, 502]

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "gunicorn-down"
    assert f"nothing accepts connections on {site.bind}" in verdict["verdict"]
    refused = site.nginx_log("(111: Connection refused) while connecting to upstream")
    assert len(refused) == 2
    assert set(quoted(refused)) <= set(verdict["evidence"])
    assert "no gunicorn master of this deployment runs" in verdict["evidence"]
    assert any(line.startswith(f"probe {site.bind}:") for line in verdict["evidence"])


@pytest.mark.fires("upstream-502")
def test_wrong_port_in_proxy_pass(site):
    site.configure(tcp_bind())
    site.start_gunicorn()
    # Another port where nothing listens: port + 1 may belong to another test.
    wrong = f"127.0.0.1:{free_port()}"
    site.start_nginx(wrong)
    assert [site.request("/") for _ in range(3)] == [502, 502, 502]
    refused = site.nginx_log("(111: Connection refused) while connecting to upstream")
    assert len(refused) == 3

    report, result = site.triage("--through-nginx")
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "upstream-mismatch"
    assert (
        f"nginx connects to {wrong} but gunicorn listens on {site.bind}"
        in verdict["verdict"]
    )
    # The request the triage itself sends through nginx is not counted.
    assert "3 refused connections" in verdict["verdict"]
    assert quoted(refused) == verdict["evidence"][-4:-1]
    assert f"proxy_pass http://{site.bind};" in verdict["fix"]
    # The request through nginx during the triage got a 502 as well.
    assert verdict["evidence"][-1].startswith("request through nginx listen")
    assert "502 Bad Gateway" in verdict["evidence"][-1]
    assert "master pid" in ruled_out(report, "gunicorn-down")

    checked, result = site.check_502()
    assert result.returncode == 1
    (finding,) = findings_of(checked, "upstream-502")
    assert finding["severity"] == "error"
    assert finding["title"].startswith(
        f"nginx connects to {wrong} but gunicorn listens on {site.bind}"
    )
    assert finding["fix"] == verdict["fix"]


def test_socket_missing_because_gunicorn_stopped(site):
    # An expert names the cause to fix first: gunicorn is not running, and
    # the socket is missing only because of that.
    sockets = site.base / "run"
    sockets.mkdir(mode=0o755)
    path = sockets / "gunicorn.sock"
    site.configure(f"unix:{path}")
    site.start_gunicorn()
    site.start_nginx(f"unix:{path}")
    site.gunicorn.stop()
    assert not path.exists()
    assert [site.request("/") for _ in range(2)] == [502, 502]

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "gunicorn-down"
    missing = site.nginx_log("(2: No such file or directory) while connecting")
    assert len(missing) == 2
    assert set(quoted(missing)) <= set(verdict["evidence"])
    assert any("does not exist" in line for line in verdict["evidence"])
    why = ruled_out(report, "socket-missing")
    assert why.startswith("not a separate cause")
    assert report["other_causes"] == []


def test_socket_deleted_under_running_gunicorn(site):
    sockets = site.base / "run"
    sockets.mkdir(mode=0o755)
    path = sockets / "gunicorn.sock"
    site.configure(f"unix:{path}")
    site.start_gunicorn()
    site.start_nginx(f"unix:{path}")
    # A cleaner of temporary files removes the socket; gunicorn runs on.
    path.unlink()
    assert [site.request("/") for _ in range(2)] == [502, 502]

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "socket-missing"
    missing = site.nginx_log("(2: No such file or directory) while connecting")
    assert set(quoted(missing)) <= set(verdict["evidence"])
    assert f"master pid {site.gunicorn.pid}" in ruled_out(report, "gunicorn-down")
    # gunicorn 27.0.1's master unlinks its socket on stop and, when the file
    # is gone, raises FileNotFoundError before it stops its workers.
    path.touch()


@pytest.mark.skipif(
    os.geteuid() != 0, reason="nginx's workers run as www-data only when root"
)
def test_socket_directory_blocks_nginx_user(site):
    private = site.base / "private"
    private.mkdir(mode=0o700)
    path = private / "gunicorn.sock"
    site.configure(f"unix:{path}")
    site.start_gunicorn()
    site.start_nginx(f"unix:{path}")
    assert [site.request("/") for _ in range(2)] == [502, 502]

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "socket-permission"
    assert f"www-data cannot search (x) the directory {private}" in verdict["verdict"]
    denied = site.nginx_log("(13: Permission denied) while connecting to upstream")
    assert len(denied) == 2
    assert set(quoted(denied)) <= set(verdict["evidence"])
    assert f"  drwx------ root root {private}" in verdict["evidence"]
    assert f"chmod o+x {private}" in verdict["fix"]


def test_worker_stuck_past_gunicorn_timeout(site):
    site.configure(tcp_bind(), timeout=1, workers=2)
    site.start_gunicorn()
    site.start_nginx(site.bind, "proxy_read_timeout 10s;")
    assert site.request("/stuck") == 502

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "worker-timeout"
    assert "gunicorn kills requests after 1 s" in verdict["verdict"]
    assert "while nginx waits 10 s" in verdict["verdict"]
    timeouts = site.gunicorn_log("WORKER TIMEOUT")
    assert len(timeouts) == 1
    assert quoted(timeouts)[0] in verdict["evidence"]
    closed = site.nginx_log("upstream prematurely closed connection")
    assert len(closed) == 1
    assert quoted(closed)[0] in verdict["evidence"]
    # gunicorn's own SIGKILL after the timeout is not an unexplained kill.
    assert "no 'was sent SIGKILL'" in ruled_out(report, "worker-sigkill")


def test_timeout_in_python_code_gives_500(site):
    # gunicorn 27.0.1's SIGABRT handler raises SystemExit inside the sleeping
    # view, and the sync worker responds to that with 500 before it exits.
    site.configure(tcp_bind(), timeout=1, workers=2)
    site.start_gunicorn()
    site.start_nginx(site.bind, "proxy_read_timeout 10s;")
    # Six seconds leave a margin for a master that notices the timeout late.
    assert site.request("/slow?seconds=6") == 500

    report, result = site.triage()
    assert result.returncode == 0
    assert report["verdict"] is None
    timeout = other_cause(report, "worker-timeout")
    assert timeout["status"] == 500
    assert "aborted 1 request" in timeout["verdict"]
    assert quoted(site.gunicorn_log("WORKER TIMEOUT"))[0] in timeout["evidence"]
    aborted = site.gunicorn_log("Error handling request GET /slow")
    assert quoted(aborted)[0] in timeout["evidence"]
    assert "aborted" in ruled_out(report, "app-errors")

    checked, _ = site.check_502()
    severities = [f["severity"] for f in findings_of(checked, "upstream-502")]
    assert severities == ["warning", "ok"]


def test_read_timeout_is_504_not_502(site):
    site.configure(tcp_bind(), timeout=30, workers=2)
    site.start_gunicorn()
    site.start_nginx(site.bind, "proxy_read_timeout 1s;")
    assert site.request("/slow") == 504

    report, result = site.triage()
    assert result.returncode == 0
    assert report["verdict"] is None
    timeout = other_cause(report, "read-timeout")
    assert timeout["status"] == 504
    assert "nginx stops waiting after 1 s" in timeout["verdict"]
    lines = site.nginx_log("upstream timed out (110: Connection timed out)")
    assert len(lines) == 1
    assert quoted(lines)[0] in timeout["evidence"]
    assert "no WORKER TIMEOUT" in ruled_out(report, "worker-timeout")


def test_worker_killed_with_sigkill(site):
    site.configure(tcp_bind(), workers=2)
    site.start_gunicorn()
    site.start_nginx(site.bind)
    assert site.request("/die") == 502

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "worker-sigkill"
    killed = site.gunicorn_log("was sent SIGKILL! Perhaps out of memory?")
    assert len(killed) == 1
    assert quoted(killed)[0] in verdict["evidence"]
    closed = site.nginx_log("upstream prematurely closed connection")
    assert quoted(closed)[0] in verdict["evidence"]
    worker = re.search(r"pid:(\d+)", killed[0])[1]
    dmesg = shutil.which("dmesg")
    readable = (
        dmesg is not None
        and subprocess.run([dmesg, "-T"], capture_output=True, check=False).returncode
        == 0
    )
    if readable:
        note = f"The kernel log does not name pid {worker}"
        assert "records no OOM kill" in verdict["verdict"]
    else:
        note = "The kernel log was not readable"
    assert any(note in line for line in verdict["evidence"]), verdict["evidence"]
    assert "no SIGKILL matched by a kernel OOM kill" in ruled_out(report, "oom-kill")


@pytest.mark.parametrize(
    ("path", "master_line"),
    [("/crash", "exited with code 1."), ("/segfault", "was sent SIGSEGV!")],
)
def test_worker_crash_mid_request(site, path, master_line):
    site.configure(tcp_bind(), workers=2)
    site.start_gunicorn()
    site.start_nginx(site.bind)
    assert site.request(path) == 502
    # The master logs the death once it has reaped the worker.
    wait_until(lambda: site.gunicorn_log(master_line))

    report, result = site.triage("--path", path)
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "worker-crash"
    assert "workers end in the middle of requests" in verdict["verdict"]
    deaths = site.gunicorn_log(master_line)
    assert quoted(deaths)[0] in verdict["evidence"]
    closed = site.nginx_log("upstream prematurely closed connection")
    assert quoted(closed)[0] in verdict["evidence"]
    assert any(line.startswith(f"probe {site.bind}") for line in verdict["evidence"])


def test_worker_crash_check_reports_502(site):
    site.configure(tcp_bind(), workers=2)
    site.start_gunicorn()
    site.start_nginx(site.bind)

    report, _ = run_json(
        "check",
        *site.target_args(),
        "--since",
        "10m",
        "--path",
        "/crash",
        "--select",
        "upstream-502",
    )
    (finding,) = findings_of(report, "upstream-502")
    assert finding["severity"] == "error"
    assert "workers end in the middle of requests" in finding["title"]


def test_too_big_header(site):
    site.configure(tcp_bind())
    site.start_gunicorn()
    site.start_nginx(site.bind)
    assert site.request("/big") == 502

    report, result = site.triage("--path", "/big")
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "too-big-header"
    lines = site.nginx_log("upstream sent too big header")
    assert len(lines) == 1
    assert quoted(lines)[0] in verdict["evidence"]
    (probe,) = report["probes"]
    assert probe["verdict"] == "headers_too_big"
    assert probe["header_bytes"] > 10240
    assert any(line.startswith(f"probe {site.bind}:") for line in verdict["evidence"])

    # The fix, pasted into the location, makes nginx accept the response.
    directives = re.match(
        r"(proxy_buffer_size \d+k; proxy_buffers 8 \d+k;)", verdict["fix"]
    )
    assert directives is not None, verdict["fix"]
    site.write_nginx_conf(site.bind, directives[1])
    assert validate_config(site.nginx_conf).returncode == 0
    os.kill(site.nginx.pid, signal.SIGHUP)
    wait_until(lambda: site.request("/big") == 200)


def test_app_boot_failure(site):
    (site.app / "app.py").write_text(BROKEN_APP + APP)
    site.configure(tcp_bind())
    site.start_nginx(site.bind)
    gunicorn = site.start_gunicorn(expect_exit=True)
    assert gunicorn.process.returncode != 0
    assert [site.request("/") for _ in range(2)] == [502, 502]

    report, result = site.triage()
    assert result.returncode == 1
    verdict = report["verdict"]
    assert verdict["cause"] == "app-boot-failure"
    assert "RuntimeError: database URL is not configured" in verdict["verdict"]
    reasons = site.gunicorn_log("Reason: Worker failed to boot.") + site.gunicorn_log(
        "Reason: App failed to load."
    )
    assert len(reasons) == 1
    assert quoted(reasons)[0] in verdict["evidence"]
    # gunicorn is down because of the boot failure, so it is folded in.
    assert "no gunicorn master of this deployment runs" in verdict["evidence"]
    assert ruled_out(report, "gunicorn-down").startswith("not a separate cause")


def test_app_boot_failure_fixed_since(site):
    (site.app / "app.py").write_text(BROKEN_APP + APP)
    site.configure(tcp_bind())
    site.start_nginx(site.bind)
    site.start_gunicorn(expect_exit=True)
    assert site.request("/") == 502
    (site.app / "app.py").write_text(APP)
    site.start_gunicorn()
    assert site.request("/") == 200

    report, _ = site.triage()
    verdict = report["verdict"]
    assert verdict["cause"] == "app-boot-failure"
    assert verdict["verdict"].startswith(
        "gunicorn failed to boot its workers before its latest start"
    )
    assert "importing app:app succeeds now" in " ".join(verdict["evidence"])
    assert f"master pid {site.gunicorn.pid}" in ruled_out(report, "gunicorn-down")


# --- reports -----------------------------------------------------------------


def test_markdown_report_removes_secrets(site):
    site.configure(tcp_bind())
    site.start_gunicorn()
    site.start_nginx(site.bind)
    site.gunicorn.stop()
    assert site.request("/orders?token=SECRET123") == 502
    # Any client can put backticks in the URL, and nginx logs them as sent.
    assert site.request("/notes```x") == 502
    # The secret is in nginx's log, so the reports below must remove it.
    assert len(site.nginx_log("token=SECRET123")) == 1

    report, _ = site.triage()
    assert report["verdict"]["cause"] == "gunicorn-down"
    json_text = site.triage_text("json").stdout
    assert "SECRET123" not in json_text
    assert "/orders?token=" in json_text

    markdown = site.triage_text("markdown")
    assert markdown.returncode == 1
    assert markdown.stdout.startswith("## gunicorn-doctor triage: why 502\n")
    assert f"**Verdict:** {report['verdict']['verdict']}" in markdown.stdout
    assert "SECRET123" not in markdown.stdout
    assert "/orders?token=" in markdown.stdout
    lines = markdown.stdout.splitlines()
    fences = [index for index, line in enumerate(lines) if line == "````"]
    assert len(fences) == 2, "the evidence needs a fence longer than ```"
    quoted_url = [index for index, line in enumerate(lines) if "/notes```x" in line]
    assert quoted_url
    assert all(fences[0] < index < fences[1] for index in quoted_url)

    plain = site.triage_text("plain")
    assert "SECRET123" not in plain.stdout
    assert "Verdict: gunicorn is not running" in plain.stdout
