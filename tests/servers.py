"""Real gunicorn masters on loopback for tests, started and stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing accepted connections on 127.0.0.1:{port}")


def wait_for_workers(pid: int, count: int, timeout: float = 15.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(psutil.Process(pid).children()) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"master {pid} did not start {count} workers")


class Gunicorn:
    """A gunicorn master started from a venv in a deployment directory."""

    def __init__(
        self, venv: Path, directory: Path, *args: str, log: Path | None = None
    ):
        self.log = log or directory / "gunicorn-test.log"
        self.process = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), *args],
            cwd=directory,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the master by its pid, then SIGKILL it if it lingers."""
        if self.process.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
