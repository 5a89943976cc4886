"""The pre-commit hook in .pre-commit-hooks.yaml: its keys, and its entry run as pre-commit runs it.

pre-commit itself is not installed here: it would build the hook's own
environment from PyPI. The tests run the hook's ``entry`` with the installed
console script in the repository's working directory instead, which is what
pre-commit does once that environment exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, copy_fixture

HOOKS_FILE = REPO / ".pre-commit-hooks.yaml"


@pytest.fixture(scope="module")
def hook() -> dict:
    hooks = yaml.safe_load(HOOKS_FILE.read_text(encoding="utf-8"))
    assert isinstance(hooks, list)
    matching = [h for h in hooks if h.get("id") == "gunicorn-doctor"]
    assert len(matching) == 1
    return matching[0]


def run_entry(hook: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run the hook's entry in ``cwd`` with no file names, as pass_filenames: false does."""
    argv = shlex.split(hook["entry"])
    executable = shutil.which(argv[0]) or shutil.which(
        argv[0], path=str(Path(sys.executable).parent)
    )
    assert executable, f"{argv[0]} is not installed; run: pip install -e ."
    return subprocess.run(
        [executable, *argv[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_hook_keys(hook):
    assert hook["entry"] == "gunicorn-doctor check --static"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert hook["always_run"] is False
    assert hook["name"]


@pytest.mark.parametrize(
    "path",
    [
        "gunicorn.conf.py",
        "deploy/gunicorn.conf.py",
        "gunicorn_config.py",
        "pyproject.toml",
        "requirements.txt",
        "service/requirements.txt",
        ".gunicorn-doctor.toml",
    ],
)
def test_hook_files_match(hook, path):
    # pre-commit selects files with re.search on the path relative to the root.
    assert re.search(hook["files"], path)


@pytest.mark.parametrize(
    "path",
    [
        "app.py",
        "gunicorn.conf.py.orig",
        "dev-requirements.txt",
        "mygunicorn.conf.py",
        "docs/pyproject.toml.example",
    ],
)
def test_hook_files_skip(hook, path):
    assert not re.search(hook["files"], path)


def test_entry_passes_healthy(hook, tmp_path):
    project = copy_fixture("healthy", tmp_path)
    result = run_entry(hook, project)
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_entry_fails_syntax_error(hook, tmp_path):
    project = copy_fixture("healthy", tmp_path)
    config = project / "gunicorn.conf.py"
    config.write_text(config.read_text() + "workers = (\n", encoding="utf-8")
    result = run_entry(hook, project)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[config-file]" in result.stdout
    assert "syntax error" in result.stdout


@pytest.mark.slow
def test_entry_executes_nothing(hook, tmp_path, venv_gunicorn_new):
    # With a working venv beside it, a run without --static would execute the
    # config file in the settings probe and create the marker.
    project = copy_fixture("healthy", tmp_path)
    (project / "venv").symlink_to(venv_gunicorn_new)
    marker = project / "executed"
    config = project / "gunicorn.conf.py"
    config.write_text(
        config.read_text() + f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8"
    )
    result = run_entry(hook, project)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists()
