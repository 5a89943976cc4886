"""Shared helpers for tests that run the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


def run_doctor(
    *args: str,
    cwd: str | Path | None = None,
    env: dict | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``python -m doctor ARGS`` and capture its output."""
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "doctor", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(*args: str, **kwargs) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``check --format json`` and parse the report."""
    result = run_doctor(*args, "--format", "json", **kwargs)
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout), result


def copy_fixture(name: str, destination: Path) -> Path:
    """Copy a fixture tree, keeping its symlinks as symlinks."""
    target = destination / name
    shutil.copytree(FIXTURES / name, target, symlinks=True)
    return target


def findings_of(report: dict, check: str) -> list[dict]:
    return [f for f in report["findings"] if f["check"] == check]


def is_gone(pid: int, wait: float = 2.0) -> bool:
    """Tell whether ``pid`` stops running within ``wait`` seconds.

    A zombie counts as gone: a killed grandchild is reparented to PID 1, which
    in a container may never reap it.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
