"""Target discovery from options, a systemd unit and the directory."""

import pytest

from doctor.target import DiscoveryError, DiscoveryOptions, discover
from tests.helpers import FIXTURES, copy_fixture


def test_directory_discovery(tmp_path):
    deployment = copy_fixture("healthy", tmp_path)
    (deployment / "venv").mkdir()
    (deployment / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    target = discover(DiscoveryOptions(cwd=str(deployment)))
    assert target.chdir.value == str(deployment)
    assert target.chdir.source == "current directory"
    assert target.app.value == "app:app"
    assert target.app.source == "WSGI callable in app.py"
    assert target.config.value == "gunicorn.conf.py"
    assert target.venv.value == f"{deployment}/venv"
    assert target.argv == ["-c", "gunicorn.conf.py", "app:app"]


def test_factory_discovered(tmp_path):
    (tmp_path / "wsgi.py").write_text("def create_app():\n    return None\n")
    target = discover(DiscoveryOptions(cwd=str(tmp_path)))
    assert target.app.value == "wsgi:create_app()"


def test_gunicorn_config_py_needs_dash_c(tmp_path):
    (tmp_path / "gunicorn_config.py").write_text("workers = 2\n")
    target = discover(DiscoveryOptions(cwd=str(tmp_path)))
    assert target.config.value == "gunicorn_config.py"
    assert "only when passed with -c" in target.config.source


def test_unit_discovery_under_root():
    target = discover(DiscoveryOptions(root=str(FIXTURES / "ecommerce")))
    assert target.unit.value == "/etc/systemd/system/ecommerce.service"
    assert target.chdir.value == "/var/www/ecommerce_knowledge"
    assert target.chdir.source.startswith("WorkingDirectory (")
    assert target.user.value == "www-data"
    assert target.launcher.value == "/var/www/ecommerce_knowledge/venv/bin/gunicorn"
    assert target.venv.value == "/var/www/ecommerce_knowledge/venv"
    assert target.argv == ["-c", "gunicorn_config.py", "app:application"]
    assert target.environment["HOME"] == "/var/www"
    assert target.environment["PATH"] == "/var/www/ecommerce_knowledge/venv/bin"


def test_explicit_app_and_config_override_unit():
    target = discover(
        DiscoveryOptions(
            root=str(FIXTURES / "ecommerce"),
            unit="/etc/systemd/system/ecommerce.service",
            app="app:app",
            config="other.py",
        )
    )
    assert target.argv == ["-c", "gunicorn_config.py", "-c", "other.py", "app:app"]
    assert target.app.source == "APP argument"


def test_several_units_rejected(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    unit = root / "etc/systemd/system/ecommerce.service"
    (root / "etc/systemd/system/shop.service").write_text(unit.read_text())
    with pytest.raises(DiscoveryError, match="several systemd units run gunicorn"):
        discover(DiscoveryOptions(root=str(root)))


def test_python_m_gunicorn_launcher(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    unit = root / "etc/systemd/system/ecommerce.service"
    unit.write_text(
        unit.read_text().replace(
            "ExecStart=/var/www/ecommerce_knowledge/venv/bin/gunicorn",
            "ExecStart=/var/www/ecommerce_knowledge/venv/bin/python -m gunicorn",
        )
    )
    target = discover(DiscoveryOptions(root=str(root)))
    assert target.launcher.value == "/var/www/ecommerce_knowledge/venv/bin/python"
    assert target.argv == ["-c", "gunicorn_config.py", "app:application"]


def test_unreadable_environment_file_noted(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    unit = root / "etc/systemd/system/ecommerce.service"
    unit.write_text(
        unit.read_text().replace(
            "Restart=always", "EnvironmentFile=/etc/ecommerce.env\nRestart=always"
        )
    )
    target = discover(DiscoveryOptions(root=str(root)))
    assert any("EnvironmentFile /etc/ecommerce.env" in note for note in target.notes)
