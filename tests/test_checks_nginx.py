"""nginx-config and nginx-upstream against configs that real nginx accepts or rejects."""

import pytest

from tests.helpers import findings_of, run_json
from tests.nginx import nginx_available, validate_config, write_config

pytestmark = pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")


def make_deployment(tmp_path, bind: str, extra: str = ""):
    deployment = tmp_path / "app"
    deployment.mkdir()
    (deployment / "app.py").write_text("def app(environ, start_response):\n    pass\n")
    (deployment / "gunicorn.conf.py").write_text(f"bind = {bind!r}\n{extra}")
    return deployment


def check(deployment, conf, *select):
    report, result = run_json(
        "check",
        "--chdir",
        str(deployment),
        "--static",
        "--nginx",
        str(conf),
        "--select",
        ",".join(select),
    )
    return report, result


@pytest.mark.quiet("nginx-config")
@pytest.mark.quiet("nginx-upstream")
def test_matching_proxy_pass(tmp_path):
    deployment = make_deployment(tmp_path, "127.0.0.1:8000")
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:8000; } }",
    )
    assert validate_config(conf).returncode == 0
    report, _ = check(deployment, conf, "nginx-config", "nginx-upstream")
    (parsed,) = findings_of(report, "nginx-config")
    (upstream,) = findings_of(report, "nginx-upstream")
    assert parsed["severity"] == "ok"
    assert upstream["severity"] == "ok"
    assert "127.0.0.1:8000" in upstream["title"]


@pytest.mark.fires("nginx-config")
def test_parse_error_with_line(tmp_path):
    deployment = make_deployment(tmp_path, "127.0.0.1:8000")
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080;\n location / { proxy_pass http://127.0.0.1:8000 } }",
    )
    nginx_says = validate_config(conf)
    assert nginx_says.returncode != 0
    report, result = check(deployment, conf, "nginx-config", "nginx-upstream")
    (parsed,) = findings_of(report, "nginx-config")
    assert parsed["severity"] == "error"
    assert parsed["location"]["path"] == str(conf)
    assert parsed["location"]["line"] is not None
    assert result.returncode == 1
    (upstream,) = findings_of(report, "nginx-upstream")
    assert upstream["severity"] == "skipped"
    assert "does not parse" in upstream["detail"]


@pytest.mark.fires("nginx-upstream")
def test_wrong_port(tmp_path):
    deployment = make_deployment(tmp_path, "127.0.0.1:8000")
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:8001; } }",
    )
    assert validate_config(conf).returncode == 0
    report, _ = check(deployment, conf, "nginx-upstream")
    (finding,) = findings_of(report, "nginx-upstream")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        "nginx connects to 127.0.0.1:8001 but gunicorn listens on 127.0.0.1:8000"
    )
    assert finding["location"]["path"] == str(conf)
    assert "proxy_pass" in finding["fix"]


@pytest.mark.fires("nginx-upstream")
def test_upstream_block_and_unix_socket(tmp_path):
    deployment = make_deployment(tmp_path, "unix:/run/shop/gunicorn.sock")
    conf = write_config(
        tmp_path / "nginx",
        "upstream shop { server unix:/run/shop/app.sock; }\n"
        "server { listen 127.0.0.1:8080; location / { proxy_pass http://shop; } }",
    )
    assert validate_config(conf).returncode == 0
    report, _ = check(deployment, conf, "nginx-upstream")
    (finding,) = findings_of(report, "nginx-upstream")
    assert finding["severity"] == "error"
    assert "unix:/run/shop/app.sock" in finding["title"]
    assert "unix:/run/shop/gunicorn.sock" in finding["title"]


@pytest.mark.fires("nginx-upstream")
def test_localhost_resolves_to_two_families(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text(
        "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
    )
    deployment = root / "srv/app"
    deployment.mkdir(parents=True)
    (deployment / "gunicorn.conf.py").write_text("bind = '127.0.0.1:8000'\n")
    (deployment / "app.py").write_text("app = None\n")
    write_config(
        root / "etc/nginx",
        "server { listen 127.0.0.1:8080; location / { proxy_pass http://localhost:8000; } }",
    )
    report, _ = run_json(
        "check",
        "--root",
        str(root),
        "--chdir",
        "/srv/app",
        "--nginx",
        "/etc/nginx/nginx.conf",
        "--select",
        "nginx-upstream",
    )
    (finding,) = findings_of(report, "nginx-upstream")
    assert finding["severity"] == "warning"
    assert "::1" in finding["title"]
    assert "127.0.0.1" in finding["title"]


@pytest.mark.fires("nginx-upstream")
def test_uwsgi_pass_to_http_gunicorn(tmp_path):
    deployment = make_deployment(tmp_path, "127.0.0.1:8000")
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080; location / {"
        " include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:8000; } }",
    )
    report, _ = check(deployment, conf, "nginx-upstream")
    (finding,) = findings_of(report, "nginx-upstream")
    assert finding["severity"] == "error"
    assert "uwsgi_pass" in finding["title"]


def test_variable_proxy_pass_is_named(tmp_path):
    deployment = make_deployment(tmp_path, "127.0.0.1:8000")
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080; set $backend 127.0.0.1:8000;"
        " location / { proxy_pass http://$backend; } }",
    )
    report, _ = check(deployment, conf, "nginx-upstream")
    severities = {f["severity"] for f in findings_of(report, "nginx-upstream")}
    assert "info" in severities


def test_bind_by_name_matches_its_address(tmp_path):
    deployment = make_deployment(tmp_path, "localhost:8000")
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:8000; } }",
    )
    report, _ = check(deployment, conf, "nginx-upstream")
    (finding,) = findings_of(report, "nginx-upstream")
    assert finding["severity"] == "ok"


@pytest.mark.fires("nginx-upstream")
@pytest.mark.parametrize(
    ("binds", "suggested"),
    [
        (["unix:/run/shop/app.sock", "0.0.0.0:8000"], "http://unix:/run/shop/app.sock"),
        (["0.0.0.0:8000", "[::1]:8001"], "http://127.0.0.1:8000"),
    ],
)
def test_no_proxy_pass_suggests_valid_line(tmp_path, binds, suggested):
    deployment = make_deployment(tmp_path, binds)
    conf = write_config(
        tmp_path / "nginx",
        "server { listen 127.0.0.1:8080; location / { return 200; } }",
    )
    report, _ = check(deployment, conf, "nginx-upstream")
    (upstream,) = findings_of(report, "nginx-upstream")
    assert upstream["severity"] == "info"
    assert upstream["fix"] == f"location / {{ proxy_pass {suggested}; }}"

    # nginx itself accepts the suggested line.
    fixed = write_config(
        tmp_path / "fixed",
        f"server {{ listen 127.0.0.1:8080; {upstream['fix']} }}",
    )
    assert validate_config(fixed).returncode == 0
