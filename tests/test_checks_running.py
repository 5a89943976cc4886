"""config-reloaded: a running master against the configuration on disk."""

import time

import psutil
import pytest

from tests.helpers import copy_fixture, findings_of, run_json
from tests.servers import Gunicorn, free_port, wait_for_port, wait_for_workers


@pytest.fixture
def deployment(tmp_path):
    return copy_fixture("healthy", tmp_path)


def start(venv, deployment, port):
    server = Gunicorn(
        venv, deployment, "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:app"
    )
    wait_for_port(port)
    wait_for_workers(server.pid, 2)
    return server


def check_running(deployment, venv, pid, *extra):
    report, result = run_json(
        "check",
        "--pid",
        str(pid),
        "--venv",
        str(venv),
        "--select",
        "config-reloaded",
        *extra,
        cwd=deployment,
    )
    return findings_of(report, "config-reloaded"), result


@pytest.mark.quiet("config-reloaded")
def test_master_matches_config(deployment, venv_gunicorn_new):
    port = free_port()
    config = deployment / "gunicorn.conf.py"
    config.write_text(config.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    server = Gunicorn(
        venv_gunicorn_new, deployment, "-c", "gunicorn.conf.py", "app:app"
    )
    try:
        wait_for_port(port)
        wait_for_workers(server.pid, 2)
        findings, _ = check_running(deployment, venv_gunicorn_new, server.pid)
        assert [f["severity"] for f in findings] == ["ok"]
        assert f"pid {server.pid}" in findings[0]["title"]
    finally:
        server.stop()
    assert (
        not psutil.pid_exists(server.pid)
        or psutil.Process(server.pid).status() == "zombie"
    )


@pytest.mark.fires("config-reloaded")
def test_workers_edited_after_start(deployment, venv_gunicorn_new):
    port = free_port()
    server = start(venv_gunicorn_new, deployment, port)
    try:
        time.sleep(2.5)
        config = deployment / "gunicorn.conf.py"
        config.write_text(config.read_text().replace("workers = 2", "workers = 3"))
        findings, _ = check_running(
            deployment,
            venv_gunicorn_new,
            server.pid,
            "-c",
            "gunicorn.conf.py",
        )
        titles = [f["title"] for f in findings]
        workers = [f for f in findings if "runs 2 workers" in f["title"]]
        assert workers, titles
        assert workers[0]["severity"] == "warning"
        assert "but the config says 3" in workers[0]["title"]
        assert f"kill -HUP {server.pid}" in workers[0]["fix"]
        assert workers[0]["location"]["path"].endswith("gunicorn.conf.py")
        changed = [
            f for f in findings if "changed after the oldest worker" in f["title"]
        ]
        assert changed
        assert changed[0]["severity"] == "info"
    finally:
        server.stop()


@pytest.mark.fires("config-reloaded")
def test_bind_edited_after_start(deployment, venv_gunicorn_new):
    port = free_port()
    config = deployment / "gunicorn.conf.py"
    config.write_text(config.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    server = Gunicorn(
        venv_gunicorn_new, deployment, "-c", "gunicorn.conf.py", "app:app"
    )
    try:
        wait_for_port(port)
        wait_for_workers(server.pid, 2)
        other = free_port()
        config.write_text(
            config.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{other}")
        )
        findings, _ = check_running(deployment, venv_gunicorn_new, server.pid)
        binds = [f for f in findings if "listens on" in f["title"]]
        assert binds, [f["title"] for f in findings]
        assert binds[0]["severity"] == "warning"
        assert f"127.0.0.1:{port}" in binds[0]["title"]
        assert f"127.0.0.1:{other}" in binds[0]["title"]
    finally:
        server.stop()


@pytest.mark.fires("config-reloaded")
def test_unit_execstart_differs(deployment, venv_gunicorn_new, tmp_path):
    port = free_port()
    server = start(venv_gunicorn_new, deployment, port)
    try:
        unit = tmp_path / "shop.service"
        unit.write_text(
            "[Service]\n"
            f"WorkingDirectory={deployment}\n"
            f"ExecStart={venv_gunicorn_new}/bin/gunicorn -c gunicorn.conf.py"
            f" -b 127.0.0.1:{port} --timeout 90 app:app\n"
        )
        findings, _ = check_running(
            deployment, venv_gunicorn_new, server.pid, "--unit", str(unit)
        )
        argv = [f for f in findings if "other arguments" in f["title"]]
        assert argv, [f["title"] for f in findings]
        assert (
            argv[0]["fix"]
            == "systemctl daemon-reload && systemctl restart shop.service"
        )
        assert any("--timeout 90" in line for line in argv[0]["evidence"])
        assert argv[0]["location"] == {"path": str(unit), "line": 3}
    finally:
        server.stop()


@pytest.mark.parametrize("flag", ["--static", "--root"])
def test_skipped_without_live_host(flag, tmp_path):
    if flag == "--static":
        args = ["--static", "--chdir", str(copy_fixture("healthy", tmp_path))]
    else:
        args = ["--root", str(copy_fixture("ecommerce", tmp_path))]
    report, _ = run_json("check", *args, "--select", "config-reloaded")
    (finding,) = findings_of(report, "config-reloaded")
    assert finding["severity"] == "skipped"


@pytest.mark.quiet("config-reloaded")
def test_bind_given_on_master_command_line(deployment, venv_gunicorn_new):
    server = start(venv_gunicorn_new, deployment, free_port())
    try:
        report, _ = run_json(
            "check",
            "--venv",
            str(venv_gunicorn_new),
            "--select",
            "config-reloaded",
            cwd=deployment,
        )
    finally:
        server.stop()
    findings = findings_of(report, "config-reloaded")
    assert [f["severity"] for f in findings] == ["ok"]
