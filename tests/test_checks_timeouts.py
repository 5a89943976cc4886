"""The timeouts checks against nginx configs real nginx accepts, unit files and gunicorn.

Deployments are read in static mode from files the tests write: a directory
with --chdir and --nginx, or a tree with a unit file under --root. Every
nginx configuration is first checked with the real ``nginx -t``. systemd
does not run here, so units are plain files. One test runs a real gunicorn
that writes a real access log.
"""

from __future__ import annotations

import math
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from checks.timeouts import parse_timespan
from doctor.context import Context
from doctor.facts.accesslog import (
    DEFAULT_FORMAT,
    JOURNAL_PREFIX,
    access_time,
    compile_access_format,
    parse_durations,
)
from doctor.rootfs import RootFS
from doctor.target import Sourced, Target
from tests.helpers import findings_of, run_json
from tests.nginx import nginx_available, validate_config, write_config
from tests.servers import Gunicorn, free_port, wait_for_port

needs_nginx = pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")

APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""
GTHREAD = "worker_class = 'gthread'\nthreads = 4\n"
FORMAT_D = DEFAULT_FORMAT + " %(D)s"
FORMAT_L = DEFAULT_FORMAT + " %(L)s"


def make_deployment(tmp_path: Path, config: str, name: str = "app") -> Path:
    deployment = tmp_path / name
    deployment.mkdir()
    (deployment / "app.py").write_text(APP)
    (deployment / "gunicorn.conf.py").write_text(config)
    return deployment


def make_nginx(directory: Path, server_block: str) -> Path:
    """Write nginx.conf around ``server_block`` and require ``nginx -t`` to pass."""
    conf = write_config(directory, server_block)
    checked = validate_config(conf)
    assert checked.returncode == 0, checked.stderr
    return conf


def proxy(port: int = 8000, location: str = "", server: str = "") -> str:
    """Return a server block whose location / forwards to 127.0.0.1:``port``."""
    return (
        f"server {{ listen 127.0.0.1:8080; {server}\n"
        f"  location / {{\n    proxy_pass http://127.0.0.1:{port};\n"
        f"    {location}\n  }}\n}}"
    )


def line_of(path: Path, text: str) -> int:
    """Return the number of the first line of ``path`` that contains ``text``."""
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def run(deployment: Path, *select: str, nginx: Path | None = None, extra=()):
    args = ["check", "--chdir", str(deployment), "--static"]
    if nginx is not None:
        args += ["--nginx", str(nginx)]
    report, _ = run_json(*args, "--select", ",".join(select), *extra)
    return report


def only(report: dict, check: str) -> dict:
    (finding,) = findings_of(report, check)
    return finding


def make_tree(
    tmp_path: Path,
    config: str,
    *,
    service: str = "",
    nginx: str | None = None,
    system_conf: str | None = None,
) -> Path:
    """Write a root tree: /srv/app, its unit and optionally nginx and system.conf.

    The unit's [Service] lines from ``service`` start at line 7.
    """
    root = tmp_path / "root"
    app = root / "srv/app"
    app.mkdir(parents=True)
    (app / "app.py").write_text(APP)
    (app / "gunicorn.conf.py").write_text(config)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "app.service").write_text(
        "[Unit]\nDescription=app\n\n[Service]\nWorkingDirectory=/srv/app\n"
        "ExecStart=/srv/app/venv/bin/gunicorn -c gunicorn.conf.py app:app\n" + service
    )
    if nginx is not None:
        make_nginx(root / "etc/nginx", nginx)
    if system_conf is not None:
        (root / "etc/systemd/system.conf").write_text(system_conf)
    return root


def run_tree(root: Path, *select: str, extra=()):
    report, _ = run_json(
        "check", "--root", str(root), "--static", "--select", ",".join(select), *extra
    )
    return report


# --- timeouts-read ---------------------------------------------------------


@needs_nginx
@pytest.mark.fires("timeouts-read")
def test_read_gunicorn_shorter_than_default(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n")
    conf = make_nginx(tmp_path / "nginx", proxy())
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "warning"
    assert "gunicorn timeout 30 s" in finding["title"]
    assert "gunicorn.conf.py:2" in finding["title"]
    assert "nginx proxy_read_timeout 60 s (nginx's default" in finding["title"]
    assert "'WORKER TIMEOUT'" in finding["detail"]
    assert "502" in finding["detail"]
    # gunicorn's value is deliberate and nginx's the default: nginx changes.
    assert finding["location"]["path"] == str(conf)
    assert finding["location"]["line"] == line_of(conf, "proxy_pass")
    assert finding["fix"].startswith("proxy_read_timeout 25s;")
    assert "timeout = 65" in finding["fix"]


@needs_nginx
@pytest.mark.fires("timeouts-read")
def test_read_equal_is_a_race(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 60\n")
    conf = make_nginx(tmp_path / "nginx", proxy(location="proxy_read_timeout 1m;"))
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "warning"
    assert "equal to" in finding["title"]
    assert "race" in finding["detail"]
    assert finding["location"] == {
        "path": str(deployment / "gunicorn.conf.py"),
        "line": 2,
    }
    assert finding["fix"].startswith("timeout = 65 in")


@needs_nginx
@pytest.mark.fires("timeouts-read")
def test_read_nginx_much_shorter(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 60\n")
    conf = make_nginx(tmp_path / "nginx", proxy(location="proxy_read_timeout 10s;"))
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "warning"
    assert "less than half of gunicorn timeout 60 s" in finding["title"]
    assert (
        f"proxy_read_timeout 10 s ({conf}:{line_of(conf, '10s')})" in (finding["title"])
    )
    assert "504" in finding["title"]
    assert finding["location"]["path"] == str(deployment / "gunicorn.conf.py")
    assert finding["fix"].startswith("timeout = 15 in")
    assert "proxy_read_timeout 55s;" in finding["fix"]


@needs_nginx
@pytest.mark.fires("timeouts-read")
def test_read_send_timeout_much_shorter(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n")
    conf = make_nginx(
        tmp_path / "nginx",
        proxy(location="proxy_read_timeout 25s; proxy_send_timeout 5s;"),
    )
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "warning"
    assert "proxy_send_timeout 5 s" in finding["title"]
    assert "while sending request to upstream" in finding["detail"]


@needs_nginx
@pytest.mark.fires("timeouts-read")
def test_read_upstream_member_points_at_proxy_pass(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n")
    conf = make_nginx(
        tmp_path / "nginx",
        "upstream shop { server 127.0.0.1:8000; }\n"
        "server { listen 127.0.0.1:8080;\n  location / {\n"
        "    proxy_pass http://shop;\n  }\n}",
    )
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "warning"
    assert finding["location"]["line"] == line_of(conf, "proxy_pass")
    assert "proxy_pass http://shop" in finding["fix"]


@needs_nginx
@pytest.mark.quiet("timeouts-read")
def test_read_nginx_slightly_shorter_is_ok(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n")
    conf = make_nginx(
        tmp_path / "nginx",
        proxy(server="proxy_read_timeout 25s; proxy_send_timeout 25s;"),
    )
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "ok"
    assert any("proxy_read_timeout 25 s" in line for line in finding["evidence"])


@needs_nginx
@pytest.mark.quiet("timeouts-read")
def test_read_gthread_timeout_is_a_heartbeat(tmp_path):
    deployment = make_deployment(
        tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n" + GTHREAD
    )
    conf = make_nginx(tmp_path / "nginx", proxy())
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "ok"
    assert "heartbeat for gthread workers" in finding["title"]


@needs_nginx
@pytest.mark.quiet("timeouts-read")
def test_read_skipped_when_nginx_forwards_elsewhere(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n")
    conf = make_nginx(tmp_path / "nginx", proxy(port=9000))
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "skipped"
    assert "127.0.0.1:8000" in finding["detail"]
    assert "nginx-upstream" in finding["detail"]


@needs_nginx
def test_read_skipped_when_nginx_does_not_parse(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n")
    conf = write_config(tmp_path / "nginx", "server { listen 8080 }")
    assert validate_config(conf).returncode != 0
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "skipped"
    assert "does not parse" in finding["detail"]


@needs_nginx
def test_read_skipped_for_inherited_fd(tmp_path):
    deployment = make_deployment(tmp_path, "bind = 'fd://3'\n")
    conf = make_nginx(tmp_path / "nginx", proxy())
    finding = only(run(deployment, "timeouts-read", nginx=conf), "timeouts-read")
    assert finding["severity"] == "skipped"
    assert "fd://" in finding["detail"]


# --- timeouts-connect ------------------------------------------------------


@needs_nginx
@pytest.mark.fires("timeouts-connect")
def test_connect_long_on_loopback(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n")
    conf = make_nginx(tmp_path / "nginx", proxy(location="proxy_connect_timeout 10s;"))
    finding = only(run(deployment, "timeouts-connect", nginx=conf), "timeouts-connect")
    assert finding["severity"] == "info"
    assert f"proxy_connect_timeout 10 s ({conf}:" in finding["title"]
    assert "backlog" in finding["detail"]
    assert finding["location"]["line"] == line_of(conf, "proxy_connect_timeout")
    assert finding["fix"].startswith("proxy_connect_timeout 5s;")


@needs_nginx
@pytest.mark.fires("timeouts-connect")
def test_connect_longer_than_gunicorn_timeout(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\ntimeout = 30\n")
    conf = make_nginx(tmp_path / "nginx", proxy(server="proxy_connect_timeout 75s;"))
    finding = only(run(deployment, "timeouts-connect", nginx=conf), "timeouts-connect")
    assert finding["severity"] == "warning"
    assert "longer than gunicorn timeout 30 s" in finding["title"]
    assert "proxy_read_timeout does" in finding["detail"]


@needs_nginx
@pytest.mark.quiet("timeouts-connect")
def test_connect_short_or_unix_socket_is_ok(tmp_path):
    tcp = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n", name="tcp")
    conf = make_nginx(
        tmp_path / "tcp-nginx", proxy(location="proxy_connect_timeout 3s;")
    )
    finding = only(run(tcp, "timeouts-connect", nginx=conf), "timeouts-connect")
    assert finding["severity"] == "ok"

    unix = make_deployment(tmp_path, "bind = 'unix:/run/app/gunicorn.sock'\n", "unix")
    conf = make_nginx(
        tmp_path / "unix-nginx",
        "server { listen 127.0.0.1:8080; location / {"
        " proxy_pass http://unix:/run/app/gunicorn.sock;"
        " proxy_connect_timeout 75s; } }",
    )
    finding = only(run(unix, "timeouts-connect", nginx=conf), "timeouts-connect")
    assert finding["severity"] == "ok"
    assert any("proxy_connect_timeout 75 s" in line for line in finding["evidence"])


# --- timeouts-graceful -----------------------------------------------------


@pytest.mark.fires("timeouts-graceful")
def test_graceful_stop_timeout_shorter(tmp_path):
    root = make_tree(tmp_path, "graceful_timeout = 30\n", service="TimeoutStopSec=10\n")
    finding = only(run_tree(root, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "warning"
    assert finding["title"].startswith(
        "systemd TimeoutStopSec=10 (/etc/systemd/system/app.service:7) is shorter"
        " than gunicorn graceful_timeout 30 s (/srv/app/gunicorn.conf.py:1)"
    )
    assert "SIGKILL" in finding["detail"]
    assert finding["location"] == {"path": "/etc/systemd/system/app.service", "line": 7}
    assert finding["fix"].startswith("TimeoutStopSec=40s in [Service]")
    assert "graceful_timeout = 5" in finding["fix"]


@pytest.mark.fires("timeouts-graceful")
def test_graceful_longer_than_systemd_default(tmp_path):
    root = make_tree(tmp_path, "graceful_timeout = 120\n")
    finding = only(run_tree(root, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "warning"
    assert "DefaultTimeoutStopSec=90s (systemd's default)" in finding["title"]
    assert finding["location"] == {"path": "/srv/app/gunicorn.conf.py", "line": 1}


@pytest.mark.fires("timeouts-graceful")
def test_graceful_against_system_conf_default(tmp_path):
    root = make_tree(
        tmp_path,
        "bind = '127.0.0.1:8000'\n",
        system_conf="[Manager]\n#DefaultTimeoutStopSec=90s\nDefaultTimeoutStopSec=20s\n",
    )
    finding = only(run_tree(root, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "warning"
    assert "DefaultTimeoutStopSec=20s (/etc/systemd/system.conf:3)" in finding["title"]
    assert "graceful_timeout 30 s (gunicorn's default)" in finding["title"]
    assert finding["location"] == {
        "path": "/etc/systemd/system/app.service",
        "line": None,
    }


@pytest.mark.fires("timeouts-graceful")
def test_graceful_quick_stop_signal(tmp_path):
    root = make_tree(tmp_path, "", service="KillSignal=SIGQUIT\n")
    finding = only(run_tree(root, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "info"
    assert "KillSignal=SIGQUIT" in finding["title"]
    assert finding["location"]["line"] == 7


@pytest.mark.fires("timeouts-graceful")
def test_graceful_invalid_time_span(tmp_path):
    root = make_tree(tmp_path, "", service="TimeoutStopSec=ten\n")
    finding = only(run_tree(root, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "warning"
    assert "TimeoutStopSec=ten" in finding["title"]
    assert "ignores the line" in finding["detail"]
    assert finding["location"]["line"] == 7


@pytest.mark.quiet("timeouts-graceful")
@pytest.mark.parametrize(
    "service",
    [
        "TimeoutSec=20\nTimeoutStopSec=1min 30s\n",
        "TimeoutStopSec=infinity\n",
        "TimeoutStopSec=0\n",
        "TimeoutStopSec=10\nTimeoutStopSec=\n",
        "TimeoutStopSec=10\nSendSIGKILL=no\n",
        "",
    ],
)
def test_graceful_stop_timeout_longer(tmp_path, service):
    root = make_tree(tmp_path, "graceful_timeout = 30\n", service=service)
    finding = only(run_tree(root, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "ok", finding["title"]


def test_graceful_skipped_without_unit(tmp_path):
    deployment = make_deployment(tmp_path, "")
    finding = only(run(deployment, "timeouts-graceful"), "timeouts-graceful")
    assert finding["severity"] == "skipped"
    assert "--unit" in finding["detail"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30s", 30),
        ("1min 30s", 90),
        ("1min30s", 90),
        ("2 h", 7200),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("5m", 300),
        ("infinity", math.inf),
    ],
)
def test_parse_timespan(text, seconds):
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "30 fortnights", "1min x", "-5s"])
def test_parse_timespan_rejects(text):
    with pytest.raises(ValueError, match="invalid time span"):
        parse_timespan(text)


# --- timeouts-keepalive ----------------------------------------------------

UPSTREAM_KEEPALIVE = (
    "upstream shop {{ server 127.0.0.1:8000; keepalive 8; {upstream} }}\n"
    "server {{ listen 127.0.0.1:8080; {server}\n  location / {{\n"
    "    proxy_pass http://shop;\n    {location}\n  }}\n}}"
)
REUSE = 'proxy_http_version 1.1; proxy_set_header Connection "";'


def keepalive_nginx(directory, *, upstream="", server="", location=REUSE) -> Path:
    return make_nginx(
        directory,
        UPSTREAM_KEEPALIVE.format(upstream=upstream, server=server, location=location),
    )


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_nginx_reuses_closed_connections(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n" + GTHREAD)
    conf = keepalive_nginx(tmp_path / "nginx")
    report = run(deployment, "timeouts-keepalive", nginx=conf)
    finding = only(report, "timeouts-keepalive")
    assert finding["severity"] == "warning"
    assert "nginx upstream keepalive_timeout 60 s (nginx's default" in finding["title"]
    assert "gunicorn keepalive 2 s (gunicorn's default)" in finding["title"]
    assert "upstream prematurely closed connection" in finding["detail"]
    assert finding["fix"].startswith("keepalive = 65 in")
    assert "keepalive_timeout 1s;" in finding["fix"]
    assert finding["location"] == {
        "path": str(deployment / "gunicorn.conf.py"),
        "line": None,
    }


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_explicit_upstream_timeout(tmp_path):
    deployment = make_deployment(
        tmp_path, "bind = '127.0.0.1:8000'\nkeepalive = 5\n" + GTHREAD
    )
    conf = keepalive_nginx(tmp_path / "nginx", upstream="keepalive_timeout 30s;")
    finding = only(
        run(deployment, "timeouts-keepalive", nginx=conf), "timeouts-keepalive"
    )
    assert finding["severity"] == "warning"
    assert f"keepalive_timeout 30 s ({conf}:" in finding["title"]
    assert finding["location"]["line"] == 2
    assert finding["fix"].startswith("keepalive = 35 in")


@needs_nginx
@pytest.mark.quiet("timeouts-keepalive")
def test_keepalive_gunicorn_longer_than_nginx(tmp_path):
    deployment = make_deployment(
        tmp_path, "bind = '127.0.0.1:8000'\nkeepalive = 75\n" + GTHREAD
    )
    conf = keepalive_nginx(tmp_path / "nginx")
    finding = only(
        run(deployment, "timeouts-keepalive", nginx=conf), "timeouts-keepalive"
    )
    assert finding["severity"] == "ok"


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_without_http11_is_inactive(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n" + GTHREAD)
    conf = keepalive_nginx(tmp_path / "nginx", location="")
    finding = only(
        run(deployment, "timeouts-keepalive", nginx=conf), "timeouts-keepalive"
    )
    assert finding["severity"] == "info"
    assert "does not reuse connections" in finding["title"]
    assert finding["fix"].startswith(
        'proxy_http_version 1.1; proxy_set_header Connection "";'
    )
    assert finding["location"]["line"] == line_of(conf, "proxy_pass")


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_location_header_replaces_inherited(tmp_path):
    # A proxy_set_header in the location drops every one set in the server.
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n" + GTHREAD)
    conf = keepalive_nginx(
        tmp_path / "nginx",
        server='proxy_set_header Connection "";',
        location="proxy_http_version 1.1; proxy_set_header Host $host;",
    )
    finding = only(
        run(deployment, "timeouts-keepalive", nginx=conf), "timeouts-keepalive"
    )
    assert finding["severity"] == "info"
    assert finding["fix"].startswith('proxy_set_header Connection "";')


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_with_sync_workers_is_useless(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n")
    conf = keepalive_nginx(tmp_path / "nginx")
    finding = only(
        run(deployment, "timeouts-keepalive", nginx=conf), "timeouts-keepalive"
    )
    assert finding["severity"] == "info"
    assert "sync workers close the connection" in finding["title"]
    assert finding["location"]["line"] == line_of(conf, "keepalive 8")


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_load_balancer_direct(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '0.0.0.0:8000'\n" + GTHREAD)
    elsewhere = make_nginx(tmp_path / "nginx", proxy(port=9000))
    finding = only(
        run(
            deployment,
            "timeouts-keepalive",
            nginx=elsewhere,
            extra=("--lb-idle-timeout", "60"),
        ),
        "timeouts-keepalive",
    )
    assert finding["severity"] == "warning"
    assert finding["title"].startswith(
        "load balancer idle timeout 60 s (--lb-idle-timeout) is not shorter than"
        " gunicorn keepalive 2 s"
    )
    assert "directly" in finding["detail"]
    assert finding["fix"] == f"keepalive = 65 in {deployment / 'gunicorn.conf.py'}"


@needs_nginx
@pytest.mark.quiet("timeouts-keepalive")
def test_keepalive_load_balancer_direct_ok(tmp_path):
    longer = make_deployment(
        tmp_path, "bind = '0.0.0.0:8000'\nkeepalive = 65\n" + GTHREAD, name="gthread"
    )
    sync = make_deployment(tmp_path, "bind = '0.0.0.0:8000'\n", name="sync")
    elsewhere = make_nginx(tmp_path / "nginx", proxy(port=9000))
    for deployment, title in (
        (longer, "every idle connection"),
        (sync, "sync workers close the connection"),
    ):
        report = run(
            deployment,
            "timeouts-keepalive",
            nginx=elsewhere,
            extra=("--lb-idle-timeout", "60"),
        )
        finding = only(report, "timeouts-keepalive")
        assert finding["severity"] == "ok"
        assert title in finding["title"]


@needs_nginx
@pytest.mark.fires("timeouts-keepalive")
def test_keepalive_load_balancer_before_nginx(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n")
    conf = make_nginx(tmp_path / "nginx", proxy())
    report = run(
        deployment, "timeouts-keepalive", nginx=conf, extra=("--lb-idle-timeout", "90")
    )
    finding = only(report, "timeouts-keepalive")
    assert finding["severity"] == "warning"
    assert "nginx keepalive_timeout 75 s (nginx's default" in finding["title"]
    assert finding["fix"].startswith("keepalive_timeout 95s;")


@needs_nginx
@pytest.mark.quiet("timeouts-keepalive")
def test_keepalive_nginx_client_timeout_longer_than_load_balancer(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n")
    conf = make_nginx(tmp_path / "nginx", proxy(server="keepalive_timeout 120s;"))
    report = run(
        deployment, "timeouts-keepalive", nginx=conf, extra=("--lb-idle-timeout", "90")
    )
    assert only(report, "timeouts-keepalive")["severity"] == "ok"


@needs_nginx
def test_keepalive_skipped_when_nginx_does_not_parse(tmp_path):
    deployment = make_deployment(tmp_path, "bind = '127.0.0.1:8000'\n" + GTHREAD)
    conf = write_config(tmp_path / "nginx", "server { listen 8080 }")
    assert validate_config(conf).returncode != 0
    report = run(
        deployment, "timeouts-keepalive", nginx=conf, extra=("--lb-idle-timeout", "60")
    )
    finding = only(report, "timeouts-keepalive")
    assert finding["severity"] == "skipped"
    assert "does not parse" in finding["detail"]


def test_keepalive_skipped_with_nothing_in_front(tmp_path):
    root = make_tree(tmp_path, "bind = '127.0.0.1:8000'\n")
    finding = only(run_tree(root, "timeouts-keepalive"), "timeouts-keepalive")
    assert finding["severity"] == "skipped"
    assert "--lb-idle-timeout" in finding["detail"]


# --- timeouts-value --------------------------------------------------------


@pytest.mark.fires("timeouts-value")
@pytest.mark.parametrize(
    ("config", "severity", "title"),
    [
        ("timeout = 0\n", "warning", "timeout = 0: gunicorn never kills a hung worker"),
        ("timeout = 0\n" + GTHREAD, "info", "timeout = 0"),
        ("timeout = 7200\n", "warning", "replaced only after 2.0 hours"),
        ("timeout = 7200\n" + GTHREAD, "info", "replaced only after 2.0 hours"),
        ("timeout = 2\n", "warning", "killed after 2 s without a heartbeat"),
        ("graceful_timeout = 0\n", "warning", "graceful_timeout = 0"),
    ],
)
def test_value_unusable(tmp_path, config, severity, title):
    deployment = make_deployment(tmp_path, config)
    finding = only(run(deployment, "timeouts-value"), "timeouts-value")
    assert finding["severity"] == severity
    assert title in finding["title"]
    assert finding["location"]["path"] == str(deployment / "gunicorn.conf.py")
    assert finding["location"]["line"] == 1


@pytest.mark.fires("timeouts-value")
def test_value_from_command_line_points_at_exec_start(tmp_path):
    root = make_tree(tmp_path, "")
    unit = root / "etc/systemd/system/app.service"
    unit.write_text(unit.read_text().replace("app:app", "--timeout 0 app:app"))
    finding = only(run_tree(root, "timeouts-value"), "timeouts-value")
    assert finding["severity"] == "warning"
    assert finding["location"] == {"path": "/etc/systemd/system/app.service", "line": 6}
    assert finding["fix"] == "--timeout 30 in ExecStart"


@pytest.mark.fires("timeouts-value")
def test_value_from_environment_points_at_unit(tmp_path):
    # GUNICORN_CMD_ARGS overrides the config file, so the fix goes there.
    root = make_tree(
        tmp_path, "timeout = 30\n", service='Environment="GUNICORN_CMD_ARGS=-t 0"\n'
    )
    finding = only(run_tree(root, "timeouts-value"), "timeouts-value")
    assert finding["severity"] == "warning"
    assert finding["location"] == {"path": "/etc/systemd/system/app.service", "line": 7}
    assert finding["fix"] == "--timeout 30 in GUNICORN_CMD_ARGS"


@pytest.mark.quiet("timeouts-value")
def test_value_defaults_are_usable(tmp_path):
    deployment = make_deployment(tmp_path, "timeout = 120\n")
    finding = only(run(deployment, "timeouts-value"), "timeouts-value")
    assert finding["severity"] == "ok"
    assert "timeout = 120" in finding["title"]


def test_value_negative_is_left_to_config_file(tmp_path):
    deployment = make_deployment(tmp_path, "timeout = -1\n")
    report = run(deployment, "timeouts-value", "config-file")
    assert only(report, "timeouts-value")["severity"] == "skipped"
    assert only(report, "config-file")["severity"] == "error"


# --- timeouts-observed -----------------------------------------------------


def access_line(seconds: float, path: str = "/", fmt: str = "D") -> str:
    stamp = datetime.now().astimezone().strftime("[%d/%b/%Y:%H:%M:%S %z]")
    duration = {
        "D": f"{round(seconds * 1e6)}",
        "L": f"{seconds:.6f}",
        "T": f"{int(seconds)}",
        "M": f"{round(seconds * 1e3)}",
    }[fmt]
    return (
        f'127.0.0.1 - - {stamp} "GET {path} HTTP/1.0" 200 2 "-" "curl/8.0" {duration}'
    )


def write_access_log(path: Path, durations, fmt: str = "D") -> None:
    lines = [access_line(s, f"/r/{i}", fmt) for i, s in enumerate(durations)]
    path.write_text("\n".join(lines) + "\n")


def observed_deployment(tmp_path, config: str, durations, fmt: str = "D"):
    atom = {"D": FORMAT_D, "L": FORMAT_L}.get(fmt, DEFAULT_FORMAT + f" %({fmt})s")
    deployment = make_deployment(
        tmp_path,
        "bind = '127.0.0.1:8000'\naccesslog = 'logs/access.log'\n"
        f"access_log_format = {atom!r}\n" + config,
    )
    (deployment / "logs").mkdir()
    write_access_log(deployment / "logs/access.log", durations, fmt)
    return deployment


@needs_nginx
@pytest.mark.fires("timeouts-observed")
def test_observed_close_to_gunicorn_timeout(tmp_path):
    durations = [0.05] * 98 + [9.2, 9.5]
    deployment = observed_deployment(tmp_path, "timeout = 10\n", durations)
    conf = make_nginx(tmp_path / "nginx", proxy())
    finding = only(
        run(deployment, "timeouts-observed", nginx=conf), "timeouts-observed"
    )
    assert finding["severity"] == "warning"
    assert finding["title"].startswith("p99 request time 9.20 s is 92% of the 10 s")
    assert (
        "p50 0.050 s, p99 9.200 s, max 9.500 s over 100 requests" in (finding["detail"])
    )
    assert "gunicorn timeout 10 s" in finding["detail"]
    assert finding["location"] == {
        "path": str(deployment / "gunicorn.conf.py"),
        "line": 4,
    }
    slowest = [line for line in finding["evidence"] if line.startswith("9.")]
    assert slowest[0].startswith("9.500 s: ")
    assert "GET /r/99 " in slowest[0]
    assert "GET /r/98 " in slowest[1]
    assert "timeout = 13" in finding["fix"]


@needs_nginx
@pytest.mark.fires("timeouts-observed")
def test_observed_close_to_nginx_read_timeout(tmp_path):
    durations = [0.5] * 50 + [18.0] * 2
    deployment = observed_deployment(tmp_path, GTHREAD, durations, fmt="L")
    conf = make_nginx(tmp_path / "nginx", proxy(location="proxy_read_timeout 20s;"))
    finding = only(
        run(deployment, "timeouts-observed", nginx=conf), "timeouts-observed"
    )
    assert finding["severity"] == "warning"
    assert "90% of the 20 s limit" in finding["title"]
    assert f"nginx proxy_read_timeout 20 s ({conf}:" in finding["detail"]
    assert finding["location"]["path"] == str(conf)
    assert "proxy_read_timeout 24s;" in finding["fix"]


@needs_nginx
@pytest.mark.quiet("timeouts-observed")
def test_observed_well_within_limits(tmp_path):
    deployment = observed_deployment(tmp_path, "", [0.02, 0.03, 0.5, 1.2])
    conf = make_nginx(tmp_path / "nginx", proxy())
    finding = only(
        run(deployment, "timeouts-observed", nginx=conf), "timeouts-observed"
    )
    assert finding["severity"] == "ok"
    assert finding["title"].startswith("p50 0.030 s, p99 1.200 s, max 1.200 s")
    assert "4% of the 30 s limit" in finding["title"]


@needs_nginx
@pytest.mark.quiet("timeouts-observed")
def test_observed_without_any_limit(tmp_path):
    deployment = observed_deployment(tmp_path, GTHREAD, [40.0, 50.0], fmt="T")
    elsewhere = make_nginx(tmp_path / "nginx", proxy(port=9000))
    report = run(deployment, "timeouts-observed", nginx=elsewhere)
    finding = only(report, "timeouts-observed")
    assert finding["severity"] == "ok"
    assert "no timeout limits a request" in finding["title"]
    assert "whole seconds" in finding["detail"]


def test_observed_skipped_without_duration_atom(tmp_path):
    deployment = make_deployment(tmp_path, "accesslog = 'access.log'\n")
    finding = only(run(deployment, "timeouts-observed"), "timeouts-observed")
    assert finding["severity"] == "skipped"
    assert "records no request duration" in finding["detail"]
    assert f"access_log_format = {FORMAT_D!r}" in finding["detail"]


def test_observed_skipped_without_access_log(tmp_path):
    deployment = make_deployment(tmp_path, f"access_log_format = {FORMAT_D!r}\n")
    finding = only(run(deployment, "timeouts-observed"), "timeouts-observed")
    assert finding["severity"] == "skipped"
    assert "accesslog is not set" in finding["detail"]


def test_observed_skipped_when_log_is_missing(tmp_path):
    deployment = make_deployment(
        tmp_path, f"accesslog = 'access.log'\naccess_log_format = {FORMAT_D!r}\n"
    )
    finding = only(run(deployment, "timeouts-observed"), "timeouts-observed")
    assert finding["severity"] == "skipped"
    assert f"{deployment / 'access.log'} does not exist" in finding["detail"]


@pytest.mark.fires("timeouts-observed")
def test_observed_lines_in_another_format(tmp_path):
    deployment = observed_deployment(tmp_path, "", [0.1, 0.2])
    log = deployment / "logs/access.log"
    log.write_text("GET / 200\nGET /x 404\n")
    finding = only(run(deployment, "timeouts-observed"), "timeouts-observed")
    assert finding["severity"] == "info"
    assert "none of the 2 lines" in finding["title"]
    assert "GET / 200" in finding["evidence"]
    assert finding["location"]["line"] == 3


# --- the access-log format ---------------------------------------------------

# An empty %(h)s: REMOTE_ADDR of a client on a unix socket.
UNIX_CLIENT_LINE = (
    ' - - [04/Dec/2026:15:26:32 +0000] "GET / HTTP/1.0" 200 2 "-" "-" 1500'
)
# gunicorn escapes quotes inside atoms as \".
ESCAPED_QUOTES_LINE = (
    '1.2.3.4 - - [04/Dec/2026:15:26:32 +0000] "GET /?q=\\"a\\" HTTP/1.1" 200 2'
    ' "-" "agent \\"x\\" 1" 7'
)


@pytest.mark.parametrize(
    ("fmt", "text", "seconds"),
    [
        (FORMAT_D, access_line(0.25, fmt="D"), 0.25),
        (FORMAT_L, access_line(0.25, fmt="L"), 0.25),
        (DEFAULT_FORMAT + " %(M)s", access_line(0.25, fmt="M"), 0.25),
        (DEFAULT_FORMAT + " %(T)s", access_line(3.7, fmt="T"), 3.0),
        (FORMAT_D, UNIX_CLIENT_LINE, 0.0015),
        (FORMAT_D, ESCAPED_QUOTES_LINE, 7e-6),
        ("%(D)s %%(L)s 100%% %(r)s", "42 %(L)s 100% GET / HTTP/1.1", 42e-6),
        ("%(T)s/%(D)d", "1/1500000", 1.5),
    ],
)
def test_access_format_reads_duration(fmt, text, seconds):
    (request,), unmatched, _ = parse_durations([text], compile_access_format(fmt))
    assert unmatched == 0
    assert request.seconds == pytest.approx(seconds)


def test_access_format_without_duration():
    with pytest.raises(ValueError, match="records no request duration"):
        compile_access_format(DEFAULT_FORMAT + " %%(D)s")


def test_access_format_counts_other_lines():
    access_format = compile_access_format(FORMAT_D)
    lines = ["[2026-12-04 15:26:32 +0000] [12] [INFO] Booting worker", access_line(1)]
    requests, unmatched, samples = parse_durations(lines, access_format)
    assert [r.seconds for r in requests] == [1.0]
    assert unmatched == 1
    assert samples == [lines[0]]


def test_access_format_behind_journal_prefix():
    line = "2026-12-04T15:26:32+0000 host gunicorn[123]: " + access_line(0.5)
    access_format = compile_access_format(FORMAT_D)
    (request,), _, _ = parse_durations([line], access_format, prefix=JOURNAL_PREFIX)
    assert request.seconds == 0.5
    assert request.line == line


def test_access_time_reads_clf_stamp():
    stamp = access_time('1.2.3.4 - - [04/Dec/2026:15:26:32 -0130] "GET /"')
    assert stamp.isoformat() == "2026-12-04T15:26:32-01:30"
    assert access_time("no time here") is None


# --- the nginx facts these checks read -------------------------------------


@needs_nginx
def test_nginx_fact_upstream_keepalive_and_headers(tmp_path):
    conf = make_nginx(
        tmp_path / "nginx",
        "keepalive_timeout 65s;\n"
        "upstream shop { server 127.0.0.1:8000; keepalive 16;\n"
        "  keepalive_timeout 30s; }\n"
        "server { listen 127.0.0.1:8080; proxy_set_header Host $host;\n"
        "  location / { proxy_pass http://shop; proxy_http_version 1.1;\n"
        '    proxy_set_header Connection ""; }\n'
        "  location /b { proxy_pass http://127.0.0.1:8000; } }",
    )
    target = Target(fs=RootFS("/"), nginx=Sourced(str(conf), "test"))
    config = Context(target).fact("nginx")
    block = config.upstreams["shop"]
    assert block.keepalive.args == ("16",)
    assert block.keepalive_timeout.args == ("30s",)
    assert block.location.line == line_of(conf, "upstream shop")
    shop, direct = config.proxy_targets
    assert shop.location.line == line_of(conf, "upstream shop")
    assert shop.pass_location.line == line_of(conf, "proxy_pass http://shop")
    assert shop.settings["proxy_http_version"].args == ("1.1",)
    assert shop.settings["keepalive_timeout"].args == ("65s",)
    assert set(shop.headers) == {"connection"}
    assert shop.headers["connection"].args == ("Connection", "")
    assert set(direct.headers) == {"host"}
    assert "proxy_http_version" not in direct.settings


# --- a real gunicorn -------------------------------------------------------

SLEEPY_APP = """\
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    seconds = float(parse_qs(environ["QUERY_STRING"]).get("sleep", ["0"])[0])
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]
"""


@needs_nginx
@pytest.mark.fires("timeouts-observed")
def test_observed_with_real_gunicorn(tmp_path, venv_gunicorn_new):
    port = free_port()
    deployment = tmp_path / "app"
    deployment.mkdir()
    (deployment / "app.py").write_text(SLEEPY_APP)
    (deployment / "gunicorn.conf.py").write_text(
        f"bind = '127.0.0.1:{port}'\ntimeout = 1\naccesslog = 'access.log'\n"
        f"access_log_format = {FORMAT_D!r}\n"
    )
    conf = make_nginx(tmp_path / "nginx", proxy(port=port))
    with Gunicorn(venv_gunicorn_new, deployment, "--no-control-socket", "app:app"):
        wait_for_port(port)
        for seconds in (0, 0.3, 0, 0.6, 0, 0.9, 0):
            url = f"http://127.0.0.1:{port}/work?sleep={seconds}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read() == b"slept"
        report, _ = run_json(
            "check",
            "--chdir",
            str(deployment),
            "--venv",
            str(venv_gunicorn_new),
            "--nginx",
            str(conf),
            "--select",
            "timeouts-observed",
        )
    finding = only(report, "timeouts-observed")
    assert finding["severity"] == "warning", finding
    assert "of the 1 s limit" in finding["title"]
    assert "over 7 requests" in finding["detail"]
    assert str(deployment / "access.log") in finding["detail"]
    assert finding["location"] == {
        "path": str(deployment / "gunicorn.conf.py"),
        "line": 2,
    }
    slowest = [line for line in finding["evidence"] if " s: " in line]
    assert len(slowest) == 5
    assert "GET /work?sleep=0.9 " in slowest[0]
    assert "GET /work?sleep=0.6 " in slowest[1]
    assert "GET /work?sleep=0.3 " in slowest[2]
    assert 0.9 <= float(slowest[0].split(" s: ")[0]) < 1.0
