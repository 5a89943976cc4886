"""A real nginx from Debian's package, run on loopback with its own prefix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Self

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> bool:
    return os.path.exists(NGINX)


def worker_user() -> str:
    """Return the user nginx's workers run as in tests: www-data when root."""
    return "www-data" if os.geteuid() == 0 else ""


def write_config(prefix: Path, server_block: str, *, user: str | None = None) -> Path:
    """Write nginx.conf under ``prefix`` around one server block; return its path."""
    for name in ("logs", "tmp"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    user_line = f"user {user};" if user else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user_line}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
daemon off;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{server_block}
}}
"""
    )
    return conf


def validate_config(conf: Path) -> subprocess.CompletedProcess:
    """Run ``nginx -t`` on ``conf``, as an operator would before a reload."""
    return subprocess.run(
        [NGINX, "-t", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )


class Nginx:
    """An nginx master started in the foreground, stopped by its pid."""

    def __init__(self, conf: Path):
        self.conf = conf
        self.process = subprocess.Popen(
            [NGINX, "-p", str(conf.parent), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=(conf.parent / "logs" / "stderr.log").open("ab"),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGQUIT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")
