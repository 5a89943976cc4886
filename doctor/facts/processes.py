"""Running gunicorn masters, their workers and the sockets they listen on.

A gunicorn master is a process whose command line runs gunicorn and whose
parent does not; its children running gunicorn are its workers. Listening
sockets come from ``psutil.net_connections``, which sees other users'
sockets only when the doctor runs as root.
"""

from __future__ import annotations

import os
import posixpath
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from doctor.context import Context, FactUnavailable, fact

PROCTITLE_PREFIX = "gunicorn: "


class ProcessInfo(NamedTuple):
    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    cwd: str | None
    exe: str | None
    user: str | None
    uid: int | None
    create_time: float

    @property
    def started(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.create_time))

    def row(self) -> str:
        """Render the process like a ``ps`` row: pid, user, start time, command."""
        command = " ".join(self.cmdline) or f"[{self.name}]"
        return f"pid {self.pid} user {self.user or self.uid} started {self.started}: {command}"


class Listener(NamedTuple):
    """A listening socket: TCP (host, port) or a unix socket path."""

    family: str
    host: str | None
    port: int | None
    path: str | None
    pid: int | None

    def describe(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        if self.family == "inet6":
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass
class Master:
    process: ProcessInfo
    workers: list[ProcessInfo] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def argv(self) -> list[str]:
        """Return gunicorn's own arguments, after the program and ``-m gunicorn``."""
        return gunicorn_args(list(self.process.cmdline))

    def serving_addresses(self, settings) -> set[str]:
        """Return the addresses the master listens on, less its control socket."""
        found = {listener.describe() for listener in self.listeners}
        return found - {settings.control_socket_address}

    @property
    def argv_binds(self) -> list[str]:
        """Return the binds the master's command line gives (-b), if any.

        They win over the config file and survive a SIGHUP reload.
        """
        from doctor.static_settings import ArgvError, parse_argv

        try:
            return list(parse_argv(self.argv).values.get("bind") or [])
        except ArgvError:
            return []

    @property
    def program(self) -> str | None:
        """Return the gunicorn script or interpreter the master was started with."""
        cmdline = list(self.process.cmdline)
        if not cmdline or cmdline[0].startswith(PROCTITLE_PREFIX):
            return self.process.exe
        # A script started through its shebang shows as "python3 SCRIPT ...".
        shebang_run = posixpath.basename(cmdline[0]).startswith("python")
        if (
            shebang_run
            and cmdline[1:2]
            and posixpath.basename(cmdline[1]) == "gunicorn"
        ):
            return cmdline[1]
        return cmdline[0]

    @property
    def venv(self) -> str | None:
        """Return the venv the master's gunicorn or Python comes from, if any."""
        for candidate in (self.process.cmdline[:1], [self.process.exe or ""]):
            program = candidate[0] if candidate else ""
            bin_dir = posixpath.dirname(program)
            if posixpath.basename(bin_dir) == "bin":
                venv = posixpath.dirname(bin_dir)
                if os.path.isfile(posixpath.join(venv, "pyvenv.cfg")):
                    return venv
        return None


def is_gunicorn_cmdline(cmdline: list[str]) -> bool:
    if not cmdline:
        return False
    if cmdline[0].startswith(PROCTITLE_PREFIX):
        return True
    if posixpath.basename(cmdline[0]) == "gunicorn":
        return True
    head = cmdline[:4]
    if posixpath.basename(cmdline[0]).startswith("python"):
        if "-m" in head and "gunicorn" in head:
            return True
        return len(cmdline) > 1 and posixpath.basename(cmdline[1]) == "gunicorn"
    return False


def gunicorn_args(cmdline: list[str]) -> list[str]:
    """Strip the interpreter and program from a gunicorn command line.

    A master renamed by setproctitle ("gunicorn: master [app]") no longer
    shows its arguments, so none are returned for it.
    """
    if cmdline and cmdline[0].startswith(PROCTITLE_PREFIX):
        return []
    for index, token in enumerate(cmdline):
        if posixpath.basename(token) == "gunicorn":
            return cmdline[index + 1 :]
        if token == "-m" and cmdline[index + 1 : index + 2] == ["gunicorn"]:
            return cmdline[index + 2 :]
    return cmdline[1:]


def _snapshot(process) -> ProcessInfo | None:
    import psutil

    try:
        with process.oneshot():
            uids = process.uids()
            try:
                cwd = process.cwd()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                cwd = None
            try:
                exe = process.exe()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                exe = None
            try:
                user = process.username()
            except KeyError:
                user = None
            return ProcessInfo(
                pid=process.pid,
                ppid=process.ppid(),
                name=process.name(),
                cmdline=tuple(process.cmdline()),
                cwd=cwd,
                exe=exe,
                user=user,
                uid=uids.real,
                create_time=process.create_time(),
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _require_live(ctx: Context) -> None:
    if not ctx.fs.is_live:
        raise FactUnavailable(
            f"the target is the tree under --root {ctx.fs.root}, not this host's"
            " processes and sockets"
        )
    if ctx.static:
        raise FactUnavailable("static mode does not read the process table")


@fact("process_table")
def process_table(ctx: Context) -> dict[int, ProcessInfo]:
    """Return every process the doctor can see, by pid."""
    _require_live(ctx)
    import psutil

    table = {}
    for process in psutil.process_iter():
        info = _snapshot(process)
        if info is not None:
            table[info.pid] = info
    return table


@fact("listeners")
def listeners(ctx: Context) -> list[Listener]:
    """Return the host's listening TCP and unix stream sockets."""
    _require_live(ctx)
    return read_listeners()


def read_listeners() -> list[Listener]:
    import socket

    import psutil

    found = []
    try:
        connections = psutil.net_connections(kind="all")
    except psutil.AccessDenied as exc:
        raise FactUnavailable(
            f"listening sockets cannot be read ({exc}); run the doctor as root"
        ) from None
    for conn in connections:
        if conn.family == socket.AF_UNIX:
            if conn.type != socket.SOCK_STREAM or not conn.laddr or conn.raddr:
                continue
            # A unix stream socket with no peer is a listener or an unaccepted
            # end; only listeners have a path bound and no peer.
            found.append(Listener("unix", None, None, conn.laddr, conn.pid))
        elif conn.status == psutil.CONN_LISTEN:
            family = "inet6" if conn.family == socket.AF_INET6 else "inet"
            found.append(
                Listener(family, conn.laddr.ip, conn.laddr.port, None, conn.pid)
            )
    return found


@fact("masters")
def masters(ctx: Context) -> list[Master]:
    """Return the running gunicorn masters with their workers and listeners."""
    table = ctx.fact("process_table")
    try:
        sockets = ctx.fact("listeners")
    except FactUnavailable:
        sockets = []
    return find_masters(table, sockets)


def find_masters(
    table: dict[int, ProcessInfo], sockets: list[Listener]
) -> list[Master]:
    gunicorns = {
        pid for pid, info in table.items() if is_gunicorn_cmdline(list(info.cmdline))
    }
    found = []
    for pid in sorted(gunicorns):
        info = table[pid]
        if info.ppid in gunicorns:
            continue
        master = Master(process=info)
        master.workers = sorted(
            (table[p] for p in gunicorns if table[p].ppid == pid), key=lambda w: w.pid
        )
        # The kernel shares the listening sockets between the master and its
        # workers, and psutil reports each socket once, under any one of them.
        family = {pid} | {w.pid for w in master.workers}
        seen = set()
        for sock in sockets:
            key = (sock.family, sock.host, sock.port, sock.path)
            if sock.pid in family and key not in seen:
                seen.add(key)
                master.listeners.append(sock)
        found.append(master)
    return found


@fact("master")
def master(ctx: Context) -> Master:
    """Return the running master of this deployment."""
    found = ctx.fact("masters")
    target = ctx.target
    if target.pid is not None:
        for candidate in found:
            if candidate.pid == target.pid:
                return candidate
        raise FactUnavailable(f"pid {target.pid} is not a running gunicorn master")
    chdir = target.chdir.value if target.chdir else None
    mine = [m for m in found if chdir and m.process.cwd == chdir]
    if len(mine) == 1:
        return mine[0]
    if len(mine) > 1:
        # Several masters of the same app: the newest is the one serving; the
        # others are left over, which the port check reports.
        return max(mine, key=lambda m: m.process.create_time)
    raise FactUnavailable(
        f"no gunicorn master runs in {chdir}" if chdir else "no gunicorn master found"
    )


def scan_masters() -> list[Master]:
    """Find the running masters without a Context, for target discovery."""
    import psutil

    table = {}
    for process in psutil.process_iter():
        info = _snapshot(process)
        if info is not None:
            table[info.pid] = info
    try:
        sockets = read_listeners()
    except FactUnavailable:
        sockets = []
    return find_masters(table, sockets)


def systemd_unit_of(pid: int) -> str | None:
    """Return the systemd service a process belongs to, from its cgroup path."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def process_environment(pid: int) -> dict[str, str] | None:
    """Return a process's environment, when the doctor may read it."""
    import psutil

    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
