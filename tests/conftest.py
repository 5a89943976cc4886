"""Shared fixtures: real virtualenvs with and without Gunicorn, built once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GUNICORN_NEW_VERSION = "27.0.1"
# The oldest 20.x release that installs, imports and serves on Python 3.11. It
# needs pkg_resources, which setuptools 82.0.0 removed.
GUNICORN_OLD_VERSION = "20.0.0"


def make_venv(path: Path, *packages: str) -> Path:
    """Create a virtualenv at ``path``, pip-install ``packages`` and return ``path``.

    The venv gets no pip of its own: the test runner's pip installs into it
    with ``--python``, which is faster than bootstrapping pip in every venv
    and still uses pip's cache.
    """
    path = Path(path)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)],
        check=True,
    )
    if packages:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(path / "bin" / "python"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *packages,
            ],
            check=True,
        )
    return path


@pytest.fixture(scope="session")
def venv_gunicorn_new(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a venv with the newest supported Gunicorn and Flask."""
    base = tmp_path_factory.mktemp("venv-gunicorn-new")
    return make_venv(base / "venv", f"gunicorn=={GUNICORN_NEW_VERSION}", "flask")


@pytest.fixture(scope="session")
def venv_gunicorn_old(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a venv with the oldest supported Gunicorn 20 and no Flask."""
    base = tmp_path_factory.mktemp("venv-gunicorn-old")
    return make_venv(
        base / "venv", f"gunicorn=={GUNICORN_OLD_VERSION}", "setuptools<81"
    )


@pytest.fixture(scope="session")
def venv_no_gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a venv with Flask but without Gunicorn."""
    base = tmp_path_factory.mktemp("venv-no-gunicorn")
    return make_venv(base / "venv", "flask")
