"""Triage when the running master disagrees with its config, or nothing fronts it."""

import pytest

from tests.helpers import copy_fixture, findings_of, run_doctor, run_json
from tests.nginx import write_config
from tests.servers import Gunicorn, free_port, wait_for_port, wait_for_workers


@pytest.fixture
def deployment(tmp_path):
    return copy_fixture("healthy", tmp_path)


def test_master_listening_elsewhere_is_the_verdict(
    deployment, venv_gunicorn_new, tmp_path
):
    configured, running = free_port(), free_port()
    config = deployment / "gunicorn.conf.py"
    config.write_text(
        config.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{configured}")
    )
    nginx = write_config(
        tmp_path / "nginx",
        f"server {{ listen 127.0.0.1:{free_port()};"
        f" location / {{ proxy_pass http://127.0.0.1:{configured}; }} }}",
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
        result = run_doctor(
            "triage",
            "--venv",
            str(venv_gunicorn_new),
            "--nginx",
            str(nginx),
            "--format",
            "json",
            cwd=deployment,
        )
    finally:
        server.stop()
    import json

    report = json.loads(result.stdout)
    verdict = report["verdict"]
    assert result.returncode == 1
    assert verdict["cause"] == "upstream-mismatch"
    assert f"127.0.0.1:{configured}" in verdict["verdict"]
    assert f"pid {server.pid} listens on 127.0.0.1:{running}" in verdict["verdict"]
    assert f"without -b 127.0.0.1:{running}" in verdict["fix"]


@pytest.mark.quiet("upstream-502")
def test_stopped_project_nobody_fronts_is_not_a_502(deployment, venv_gunicorn_new):
    report, result = run_json(
        "check",
        "--venv",
        str(venv_gunicorn_new),
        "--select",
        "upstream-502",
        cwd=deployment,
    )
    (finding,) = findings_of(report, "upstream-502")
    assert finding["severity"] == "ok"
    assert result.returncode == 0
    triage, _ = run_json("triage", "--venv", str(venv_gunicorn_new), cwd=deployment)
    reasons = {c["cause"]: c["why"] for c in triage["ruled_out"]}
    assert "nothing expects this deployment to serve" in reasons["gunicorn-down"]


def test_unexaminable_causes_are_not_ruled_out(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    report, _ = run_json("triage", "--root", str(root))
    ruled = {c["cause"] for c in report["ruled_out"]}
    assert "oom-kill" not in ruled
    assert any("OOM killer" in item for item in report["not_examined"])


def test_bundle_with_one_refused_line_has_a_verdict(tmp_path):
    from datetime import datetime, timedelta

    root = copy_fixture("ecommerce", tmp_path)
    logs = root / "var/log/nginx"
    logs.mkdir(parents=True)
    stamp = (datetime.now() - timedelta(minutes=10)).strftime("%Y/%m/%d %H:%M:%S")
    (logs / "error.log").write_text(
        f"{stamp} [error] 1234#1234: *5 connect() failed (111: Connection refused)"
        " while connecting to upstream, client: 127.0.0.1, server: shop.test,"
        ' request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:5000/",'
        ' host: "shop.test"\n'
    )
    report, result = run_json("triage", "--root", str(root))
    assert result.returncode == 1
    assert report["verdict"]["cause"] == "gunicorn-down"
    assert "were refused" in report["verdict"]["verdict"]
    assert any(
        "111: Connection refused" in line for line in report["verdict"]["evidence"]
    )
