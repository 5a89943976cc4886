"""Checks of the addresses gunicorn listens on: who has them, who can reach them.

The addresses come from the ``binds`` fact: the effective ``bind`` setting,
or the ``ListenStream=`` sockets of a systemd socket unit, which replace it.
The checks that look at processes and sockets run on the live host only. The
others read configuration and files, so they work under ``--root`` as well.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shlex
import socket
import stat
from dataclasses import dataclass, field
from typing import NamedTuple

from doctor import (
    Context,
    FactUnavailable,
    Location,
    check,
    error,
    info,
    ok,
    skipped,
    warning,
)
from doctor.facts.binds import (
    RESOLVED_BY_GETADDRINFO,
    SD_LISTEN_FDS_START,
    WILDCARD_HOSTS,
    Bind,
    BindPlan,
    ListenSocket,
    format_address,
    is_ip_literal,
    is_ipv6_literal,
    is_local_host,
    resolve_name,
    runtime_directories,
    tmpfiles_directories,
)
from doctor.facts.processes import Master, ProcessInfo
from doctor.findings import Finding
from doctor.perms import (
    EXECUTE,
    WRITE,
    Identity,
    PathVerdict,
    allowed,
    check_path,
    describe_stat,
    group_name,
    identity_for,
    nearest_existing,
)

PRIVILEGED_PORT_LIMIT = 1024
CAP_NET_BIND_SERVICE_BIT = 10
TMP_DIRECTORIES = ("/tmp", "/var/tmp")
# systemd.socket(5) defaults for the file of a unix ListenStream= socket.
SOCKET_UNIT_MODE = 0o666
SOCKET_UNIT_DIRECTORY_MODE = 0o755
# systemd.exec(5): RuntimeDirectoryMode= defaults to 0755.
RUNTIME_DIRECTORY_MODE = 0o755
CONNECT_TIMEOUT = 2.0
MAX_ANCESTRY = 64
TRUE_VALUES = ("yes", "true", "1", "on", "y", "t")


# --- shared helpers -------------------------------------------------------------


def _service_name(ctx: Context) -> str | None:
    unit = ctx.target.unit
    return posixpath.basename(unit.value) if unit is not None else None


def _bind_fix(
    ctx: Context,
    plan: BindPlan,
    bind: Bind,
    replacement: str,
    others: dict[Bind, str] | None = None,
) -> str:
    """Return the config line that changes ``bind`` to ``replacement``, and where.

    ``others`` maps further binds to their replacements, so that one line in
    the config file fixes them all.
    """
    if bind.activated:
        value = replacement.removeprefix("unix:")
        return f"ListenStream={value}  (in {bind.location}, replacing {bind.text})"
    if plan.source_kind == "cli":
        where = "gunicorn's command line"
        service = ctx.target.service
        if service is not None and service.exec_start_entry is not None:
            entry = service.exec_start_entry
            where = f"ExecStart= in {entry.path}:{entry.line}"
        return f"-b {replacement}  (in {where}, replacing -b {bind.text})"
    if plan.source_kind == "env":
        return f"-b {replacement}  (in GUNICORN_CMD_ARGS, replacing -b {bind.text})"
    changes = {**(others or {}), bind: replacement}
    texts = [changes.get(b, b.text) for b in plan.configured]
    if len(texts) == 1:
        line = f"bind = {json.dumps(texts[0])}"
    else:
        line = f"bind = {json.dumps(texts)}"
    if bind.location is not None:
        return f"{line}  (in {bind.location})"
    return f"{line}  (in the gunicorn config file)"


def _plan(ctx: Context) -> BindPlan:
    plan = ctx.fact("binds")
    if not plan.binds:
        if plan.problems:
            raise FactUnavailable(
                "gunicorn cannot parse its bind values (port-bind reports them)"
            )
        raise FactUnavailable("gunicorn binds no address (port-bind reports it)")
    return plan


class MasterUser(NamedTuple):
    """The user gunicorn's master starts as, which is the user that binds."""

    name: str
    uid: int | None
    source: str
    identity: Identity | None

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def _truthy(entry) -> bool:
    """Tell whether a unit setting is a boolean true, as systemd parses it."""
    return entry is not None and entry.value.strip().lower() in TRUE_VALUES


def _master_user(ctx: Context) -> MasterUser | None:
    """Return who starts the master: the unit's ``User=``, else the running master."""
    fs = ctx.fs
    service = ctx.target.service
    if service is not None:
        dynamic = service.unit.value("Service", "DynamicUser")
        if _truthy(dynamic):
            return MasterUser(
                "a dynamic user",
                None,
                f"DynamicUser= at {dynamic.path}:{dynamic.line}",
                None,
            )
        entry = service.user
        if entry is not None:
            identity = identity_for(fs, entry.value)
            uid = identity.uid if identity else None
            if uid is None and entry.value.isdigit():
                uid = int(entry.value)
                identity = Identity(entry.value, uid, frozenset())
            return MasterUser(
                entry.value, uid, f"User= at {entry.path}:{entry.line}", identity
            )
        root = identity_for(fs, 0) or Identity("root", 0, frozenset({0}))
        return MasterUser(
            "root",
            0,
            f"{service.unit.path} sets no User=, so systemd starts it as root",
            root,
        )
    try:
        master = ctx.fact("master")
    except FactUnavailable:
        return None
    process = master.process
    identity = None
    if process.uid is not None:
        identity = identity_for(fs, process.uid) or Identity(
            str(process.uid), process.uid, frozenset()
        )
    return MasterUser(
        process.user or str(process.uid),
        process.uid,
        f"user of the running master pid {process.pid}",
        identity,
    )


@dataclass
class Running:
    """The gunicorn masters on this host, and which of them belong to this app."""

    table: dict[int, ProcessInfo]
    masters: list[Master]
    mine: list[Master]
    current: Master | None

    def owner(self, pid: int) -> Master | None:
        """Return the gunicorn master that ``pid`` is or descends from, if any."""
        by_pid = {m.pid: m for m in self.masters}
        for _ in range(MAX_ANCESTRY):
            if pid in by_pid:
                return by_pid[pid]
            process = self.table.get(pid)
            if process is None or process.ppid in (0, pid):
                return None
            pid = process.ppid
        return None

    def is_mine(self, master: Master) -> bool:
        return any(m.pid == master.pid for m in self.mine)


def _running(ctx: Context) -> Running:
    table = ctx.fact("process_table")
    masters = ctx.fact("masters")
    try:
        current = ctx.fact("master")
    except FactUnavailable:
        current = None
    chdir = ctx.target.chdir.value if ctx.target.chdir else None
    real = os.path.realpath(chdir) if chdir else None
    mine = [
        m
        for m in masters
        if (current is not None and m.pid == current.pid)
        or (real is not None and m.process.cwd == real)
    ]
    return Running(table, masters, mine, current)


# --- port-bind ------------------------------------------------------------------


@check(
    "port-bind",
    area="port",
    title="gunicorn's bind addresses are valid",
    needs=("binds",),
)
def port_bind(ctx: Context):
    """Fail when gunicorn rejects a bind value at start, or socket activation conflicts.

    Each ``bind`` value is parsed the way gunicorn parses it at start:
    ``HOST:PORT``, ``[V6]:PORT``, a bare ``HOST`` on port 8000, ``unix:PATH``
    or ``fd://N``. A value gunicorn rejects stops the master with a
    RuntimeError.
    When a systemd socket unit (``NAME.socket`` next to the service, or one
    that ``Sockets=`` names) activates the service, gunicorn listens on the
    sockets systemd passes and ignores the addresses of ``bind``. That fails
    with ``Accept=yes``, and with ``reuse_port`` on gunicorn 24 and later,
    whose workers then bind ``bind`` themselves and collide with systemd's
    sockets.
    """
    plan = ctx.fact("binds")
    findings: list[Finding] = []
    for problem in plan.problems:
        findings.append(
            error(
                f"gunicorn cannot listen on {problem.text!r}: {problem.message}",
                "gunicorn parses every address when the master starts; this one"
                " stops it before it serves a request.",
                fix="Write the address as HOST:PORT, [IPV6]:PORT, unix:PATH or"
                ' fd://N, for example bind = "127.0.0.1:8000"',
                evidence=[problem.origin],
                location=problem.location,
            )
        )
    for bind in plan.binds:
        if bind.kind == "tcp" and bind.port == 0:
            findings.append(
                warning(
                    f"{bind.text} binds port 0: the kernel picks a new port at each"
                    " start",
                    "nginx cannot be pointed at a port that changes on every restart.",
                    fix=_bind_fix(ctx, plan, bind, format_address(bind.host, 8000)),
                    evidence=[bind.origin],
                    location=bind.location,
                )
            )
    if plan.socket_unit is not None:
        findings.extend(_activation_findings(ctx, plan))
    elif not plan.binds and not plan.problems:
        findings.append(
            error(
                "bind is empty: gunicorn listens on nothing",
                "An empty bind list gives the master no socket, so no request"
                " reaches the workers.",
                fix='bind = "127.0.0.1:8000"',
                evidence=[plan.setting],
                location=ctx.fact("settings").location("bind"),
            )
        )
    if findings:
        yield from findings
        return
    yield ok(
        f"gunicorn binds {', '.join(b.describe() for b in plan.binds)}",
        evidence=list(dict.fromkeys(b.origin for b in plan.binds)),
    )


def _activation_findings(ctx: Context, plan: BindPlan) -> list[Finding]:
    unit = plan.socket_unit
    findings = []
    if unit.accept:
        entry = unit.accept_entry
        findings.append(
            error(
                f"{unit.path} sets Accept=yes",
                "With Accept=yes systemd accepts every connection itself and"
                " starts one service instance per connection; gunicorn needs the"
                " listening socket (Accept=no).",
                fix=f"Accept=no  (in {entry.path}:{entry.line})",
                evidence=[f"Accept={entry.value}"],
                location=Location(entry.path, entry.line),
            )
        )
    if not unit.listen_streams:
        findings.append(
            warning(
                f"{unit.path} has no ListenStream=",
                "systemd passes no stream socket, so gunicorn binds its own"
                f" addresses ({plan.setting}).",
                fix="ListenStream=127.0.0.1:8000  (in [Socket])",
                location=Location(unit.path),
            )
        )
    version = _version_tuple(plan.gunicorn_version)
    if plan.reuse_port and (version is None or version >= (24,)):
        findings.append(
            error(
                f"reuse_port is on while {unit.path} passes the sockets",
                "Since gunicorn 24 a master with reuse_port binds nothing and"
                " each worker binds the addresses of bind itself, ignoring"
                " systemd's sockets; those binds collide with systemd's"
                " listening sockets ('Connection in use').",
                fix="reuse_port = False  (in the gunicorn config), or remove the"
                " socket unit",
                location=ctx.fact("settings").location("reuse_port"),
                evidence=[
                    f"gunicorn {plan.gunicorn_version or 'version unknown'}",
                    f"reuse_port = True, socket unit {unit.path}",
                ],
            )
        )
    ignored = [b for b in plan.configured if b.kind != "fd"]
    if ignored and plan.source_kind != "default":
        findings.append(
            warning(
                f"bind ({', '.join(b.text for b in ignored)}) is ignored: systemd"
                f" passes the sockets of {unit.path}",
                "gunicorn listens on the descriptors systemd passes in"
                " LISTEN_FDS and skips every address of bind, so editing bind"
                " changes nothing.",
                fix="Remove bind from the gunicorn configuration and change"
                f" ListenStream= in {unit.path} instead",
                evidence=[plan.setting]
                + [
                    f"ListenStream={e.value} ({e.path}:{e.line})"
                    for e in unit.listen_streams
                ],
                location=ignored[0].location,
            )
        )
    if unit.enabled is False and not findings:
        findings.append(
            info(
                f"{posixpath.basename(unit.path)} is not enabled",
                "No link in /etc/systemd/system/sockets.target.wants/ starts the"
                " socket at boot; unless another unit starts it, gunicorn binds"
                f" its own addresses ({plan.setting}).",
                fix=f"systemctl enable --now {posixpath.basename(unit.path)}",
                location=Location(unit.path),
            )
        )
    if not findings:
        findings.append(
            ok(
                "systemd passes gunicorn its sockets: "
                + ", ".join(b.describe() for b in plan.binds),
                f"{unit.path} activates the service; gunicorn gets the sockets"
                f" as descriptors from {SD_LISTEN_FDS_START} on and does not bind them"
                " itself.",
                evidence=[b.origin for b in plan.binds],
            )
        )
    return findings


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts) or None


# --- port-listener --------------------------------------------------------------


@check(
    "port-listener",
    area="port",
    title="This deployment's gunicorn listens on its addresses",
    needs=("binds", "listen_sockets", "process_table", "masters"),
    live=True,
)
def port_listener(ctx: Context):
    """Fail when another process, or an older master of this app, has a bind.

    For every address gunicorn binds, the check lists the listening sockets
    that overlap it (the same port on the same address, a wildcard, or a
    dual-stack ``[::]``) and every process holding them, read from
    ``/proc/net`` and ``/proc/PID/fd``. A socket held by this deployment's
    master or its workers is fine. An older master of the same app (same
    working directory), left behind by a restart, keeps serving old code.
    Any other process makes gunicorn fail at start with "Connection in use". An address that no process holds is an error while
    a master of this app runs, a warning when only the unit exists, and
    information otherwise.
    """
    plan = _plan(ctx)
    table = ctx.fact("listen_sockets")
    running = _running(ctx)
    reported: set[int] = set()
    for bind in plan.binds:
        yield from _listener_findings(ctx, plan, bind, table, running, reported)
    for master in running.mine:
        if running.current is not None and master.pid == running.current.pid:
            continue
        if master.pid in reported:
            continue
        yield _other_master_finding(running, master, [])


def _overlaps(ctx: Context, bind: Bind, sock: ListenSocket) -> bool:
    if bind.kind == "unix":
        return sock.family == "unix" and sock.path == bind.path
    if sock.family == "unix" or sock.port != bind.port:
        return False
    host = bind.host or "0.0.0.0"
    if bind.is_name:
        resolved = resolve_name(ctx, host).gunicorn
        if resolved is None:
            # An unresolved name could be any address: the port decides.
            return True
        host = resolved
    bind_family = "inet6" if is_ipv6_literal(host) else "inet"
    return _addresses_collide(host, bind_family, sock.host or "", sock.family)


def _addresses_collide(host_a: str, family_a: str, host_b: str, family_b: str) -> bool:
    """Tell whether two TCP binds on one port collide on Linux.

    An IPv6 socket on ``::`` takes IPv4 addresses too unless the socket sets
    IPV6_V6ONLY or net.ipv6.bindv6only=1. gunicorn does not set the option,
    and the sysctl is 0 by default.
    """
    if family_a == family_b:
        return host_a == host_b or host_a in WILDCARD_HOSTS or host_b in WILDCARD_HOSTS
    v6 = host_a if family_a == "inet6" else host_b
    return v6 == "::"


def _is_systemd(running: Running, pid: int) -> bool:
    process = running.table.get(pid)
    return pid == 1 or (process is not None and process.name == "systemd")


@dataclass
class Holders:
    """The processes that have sockets overlapping one bind, by relation."""

    own: list = field(default_factory=list)  # (socket, master) of this master
    older: dict = field(default_factory=dict)  # pid -> (master, sockets)
    strangers: dict = field(default_factory=dict)  # pid -> sockets
    hidden: list = field(default_factory=list)  # sockets with unknown holders
    systemd: list = field(default_factory=list)


def _classify(bind: Bind, sockets: list[ListenSocket], running: Running) -> Holders:
    holders = Holders()
    for sock in sockets:
        if not sock.holders:
            holders.hidden.append(sock)
        for pid in sock.pids:
            master = running.owner(pid)
            if master is not None and running.is_mine(master):
                current = running.current
                if current is None or master.pid == current.pid:
                    holders.own.append((sock, master))
                else:
                    holders.older.setdefault(master.pid, (master, []))[1].append(sock)
            elif bind.activated and _is_systemd(running, pid):
                holders.systemd.append(sock)
            else:
                holders.strangers.setdefault(pid, []).append(sock)
    return holders


def _listener_findings(ctx, plan, bind, table, running, reported) -> list[Finding]:
    if bind.kind == "fd":
        return [_fd_finding(bind, table, running)]
    sockets = [s for s in table.sockets if _overlaps(ctx, bind, s)]
    if not sockets:
        return [_nobody_finding(ctx, plan, bind, running)]
    holders = _classify(bind, sockets, running)
    own, older, strangers = holders.own, holders.older, holders.strangers
    hidden, systemd = holders.hidden, holders.systemd

    findings = []
    own_rows = list(dict.fromkeys(s.ss_row(running.table) for s, _ in own))
    for master, held in older.values():
        reported.add(master.pid)
        findings.append(_other_master_finding(running, master, held, bind, own_rows))

    for pid, held in strangers.items():
        parent = running.table.get(pid)
        if parent is not None and parent.ppid in strangers:
            # A forking server's children share its socket: report the parent.
            continue
        findings.append(_stranger_finding(ctx, plan, bind, running, pid, held))

    for sock in hidden:
        if sock in (s for s, _ in own) or sock in systemd:
            continue
        held = sock.describe()
        if held != bind.describe():
            held = f"{bind.describe()}: {held}"
        findings.append(
            warning(
                f"{held} is held by a process the doctor cannot see",
                f"The doctor (uid {os.geteuid()}) could not read the file"
                f" descriptors of {table.unreadable_pids} processes. Run it as"
                " root to tell whether this deployment's gunicorn holds the"
                " address.",
                fix="sudo gunicorn-doctor check --select port-listener",
                evidence=[
                    sock.ss_row(running.table)
                    + (f" uid={sock.uid}" if sock.uid is not None else "")
                ],
                location=bind.location,
            )
        )
    if findings:
        return findings

    if own:
        master = own[0][1]
        held = sorted({s.describe() for s, _ in own})
        workers = ", ".join(str(w.pid) for w in master.workers) or "none"
        return [
            ok(
                f"{bind.describe()} is held by this deployment's master pid"
                f" {master.pid}",
                f"listening: {', '.join(held)}; workers: {workers}",
                evidence=[s.ss_row(running.table) for s, _ in own[:1]]
                + [master.process.row()],
            )
        ]
    return [
        ok(
            f"systemd holds {bind.describe()} for socket activation",
            "systemd listens on the socket and passes it to gunicorn when the"
            " service starts.",
            evidence=[s.ss_row(running.table) for s in systemd],
        )
    ]


def _fd_finding(bind: Bind, table, running: Running) -> Finding:
    master = running.current
    if master is None:
        return info(
            f"{bind.text}: gunicorn listens on a socket its parent passes",
            f"No master of this deployment runs, so the address behind descriptor"
            f" {bind.fd} is unknown until it starts.",
            evidence=[bind.origin],
        )
    held = [
        s for s in table.sockets if any(running.owner(pid) is master for pid in s.pids)
    ]
    return ok(
        f"{bind.text}: master pid {master.pid} listens on"
        f" {', '.join(s.describe() for s in held) or 'no socket the doctor sees'}",
        "gunicorn takes over the inherited descriptor and closes the number, so"
        " the socket shows under a new descriptor.",
        evidence=[s.ss_row(running.table) for s in held] + [master.process.row()],
    )


def _nobody_finding(ctx: Context, plan: BindPlan, bind: Bind, running: Running):
    name = _service_name(ctx)
    address = bind.describe()
    if running.current is not None:
        master = running.current
        control = ctx.fact("settings").control_socket_address
        theirs = sorted(
            {
                s.describe()
                for s in ctx.fact("listen_sockets").sockets
                if any(running.owner(pid) is master for pid in s.pids)
            }
            - {control}
        )
        if master.argv_binds:
            fix = (
                f"Restart the master without -b {' -b '.join(master.argv_binds)} on"
                " its command line: a SIGHUP keeps the binds it was started with"
                + (f" (systemctl restart {name})" if name else "")
            )
        else:
            fix = (
                f"kill -HUP {master.pid}  (gunicorn rereads its config and rebinds"
                " changed addresses)"
                + (f", or systemctl restart {name}" if name else "")
            )
        return error(
            f"nothing listens on {address}, but master pid {master.pid} of this app"
            " runs",
            "The master was started with other settings than those on disk"
            f" (it listens on {', '.join(theirs) or 'nothing the doctor sees'}),"
            " so nginx gets 'Connection refused' on this address.",
            fix=fix,
            evidence=[bind.origin, master.process.row()],
            location=bind.location,
        )
    if name is not None:
        start = (
            f"systemctl start {plan.socket_unit.path.rsplit('/', 1)[-1]}"
            if bind.activated
            else f"systemctl start {name}"
        )
        return warning(
            f"nothing listens on {address}: {name} is not running",
            f"The unit {ctx.target.unit.value} exists but no gunicorn master of"
            f" this app runs, so requests to {address} fail (nginx answers 502).",
            fix=f"{start}\njournalctl -u {name} -n 50  (why it stopped)",
            evidence=[bind.origin],
            location=bind.location,
        )
    return info(
        f"nothing listens on {address} yet",
        "No gunicorn master of this app runs; gunicorn binds the address when it"
        " starts, and nothing else holds it now.",
        evidence=[bind.origin],
        location=bind.location,
    )


def _other_master_finding(
    running: Running, master, held, bind: Bind | None = None, own_rows=()
):
    current = running.current
    older = current is None or master.process.create_time <= current.process.create_time
    what = "an older" if older else "another"
    where = f" on {bind.describe()}" if bind is not None else ""
    evidence = [*own_rows, *(s.ss_row(running.table) for s in held)]
    if current is not None:
        evidence.append(f"current: {current.process.row()}")
    evidence.append(f"{'older' if older else 'other'}: {master.process.row()}")
    return error(
        f"{what} gunicorn master of this app still runs{where}: pid {master.pid}",
        f"pid {master.pid} runs in {master.process.cwd} like this deployment's"
        + (f" master pid {current.pid}" if current is not None else " gunicorn")
        + ". A master left behind by a restart keeps serving the code it loaded"
        " and takes a share of the connections.",
        fix=f"kill -TERM {master.pid}",
        evidence=evidence,
        location=bind.location if bind is not None else None,
    )


def _stranger_finding(ctx, plan, bind, running: Running, pid: int, held) -> Finding:
    process = running.table.get(pid)
    master = running.owner(pid)
    if master is not None:
        command = f"gunicorn of {master.process.cwd}"
    elif process is not None:
        command = _short_command(process)
    else:
        command = "a process that exited"
    evidence = [s.ss_row(running.table) for s in held]
    evidence.append(process.row() if process is not None else f"pid {pid}: gone")
    if master is not None and master.pid != pid:
        evidence.append(f"its master: {master.process.row()}")
    target = master.pid if master is not None else pid
    if bind.kind == "unix":
        starts = (
            "nginx's connections reach that process, and a starting gunicorn"
            " unlinks the file and binds a new one"
        )
        alternative = "bind another socket path"
    else:
        starts = (
            "this deployment's gunicorn cannot bind it: it logs 'Connection in"
            f" use: {_gunicorn_address(bind)}', retries five times and exits"
        )
        alternative = _bind_fix(ctx, plan, bind, _free_alternative(bind))
    return error(
        f"{bind.describe()} is held by pid {pid} ({command}), not by this"
        " deployment's gunicorn",
        f"While pid {pid} listens there, {starts}.",
        fix=f"kill -TERM {target}  (if that process is not needed), or move this"
        f" deployment: {alternative}",
        evidence=evidence,
        location=bind.location,
    )


def _free_alternative(bind: Bind) -> str:
    return format_address(bind.host or "0.0.0.0", "<free port>")


def _short_command(process, limit: int = 60) -> str:
    command = " ".join(" ".join(process.cmdline).split()) or process.name
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _gunicorn_address(bind: Bind) -> str:
    """Render an address the way gunicorn's bind errors print it."""
    if bind.kind == "unix":
        return bind.path
    return str((bind.host, bind.port))


# --- port-exposed ---------------------------------------------------------------


@check(
    "port-exposed",
    area="port",
    title="gunicorn is reachable only through nginx",
    needs=("binds",),
)
def port_exposed(ctx: Context):
    """Warn when gunicorn listens on every interface while nginx on this host fronts it.

    A bind on ``0.0.0.0``, ``[::]`` (or ``::``) accepts connections from
    other machines, so clients can reach gunicorn around nginx, skipping its
    TLS, limits, buffering and access rules. The check reads nginx's
    ``proxy_pass`` targets (``upstream`` servers included): a target on this
    machine (a loopback address, ``localhost`` or one of the host's own
    addresses) on the same port means nginx fronts gunicorn and the bind
    should be loopback only. Works on configuration alone, so also under
    ``--root``.
    """
    plan = _plan(ctx)
    tcp = [b for b in plan.binds if b.kind == "tcp"]
    wildcards = [b for b in tcp if b.is_wildcard]
    if not wildcards:
        if not tcp:
            yield ok(
                "gunicorn listens on no TCP address",
                ", ".join(b.describe() for b in plan.binds),
            )
            return
        yield ok(
            "gunicorn listens on specific addresses only: "
            + ", ".join(b.describe() for b in tcp),
            evidence=[b.origin for b in tcp],
        )
        return
    try:
        nginx = ctx.fact("nginx")
        reason = None
    except FactUnavailable as exc:
        nginx, reason = None, exc.reason
    fronted = {}
    for bind in wildcards:
        targets = _local_targets(ctx, nginx, bind)
        if targets:
            fronted[bind] = targets
    replacements = {
        bind: _loopback_replacement(bind, targets) for bind, targets in fronted.items()
    }
    for bind in wildcards:
        if bind in fronted:
            yield _exposed_finding(ctx, plan, bind, fronted[bind], replacements)
        else:
            yield _unfronted_finding(bind, nginx, reason)


def _local_targets(ctx: Context, nginx, bind: Bind) -> list:
    """Return nginx's proxy targets that reach ``bind``'s port on this machine."""
    if nginx is None:
        return []
    return [
        t
        for t in nginx.proxy_targets
        if t.kind == "tcp" and t.port == bind.port and is_local_host(ctx, t.host)
    ]


def _loopback_replacement(bind: Bind, targets) -> str:
    loopback_v6 = all(t.host and is_ipv6_literal(t.host) for t in targets)
    return format_address("::1" if loopback_v6 else "127.0.0.1", bind.port)


def _target_row(target) -> str:
    """Render a proxy target as evidence: where nginx's config names it."""
    if target.upstream:
        return (
            f"{target.location}: server {target.describe()} (upstream"
            f" {target.upstream}, used by {target.text})"
        )
    return f"{target.location}: {target.text}"


def _unfronted_finding(bind: Bind, nginx, reason) -> Finding:
    address = bind.describe()
    if nginx is None:
        return info(
            f"gunicorn listens on every interface ({address})",
            f"Other machines can connect to it. Whether nginx fronts it is unknown:"
            f" {reason}.",
            evidence=[bind.origin],
            location=bind.location,
        )
    return info(
        f"gunicorn listens on every interface ({address}) and nginx does not"
        f" proxy to port {bind.port}",
        "Clients reach gunicorn directly; that is intended only when no proxy"
        " on this host fronts it.",
        evidence=[bind.origin],
        location=bind.location,
    )


def _exposed_finding(ctx, plan, bind: Bind, targets, replacements) -> Finding:
    address = bind.describe()
    replacement = replacements[bind]
    others = {b: r for b, r in replacements.items() if b != bind}
    fix = _bind_fix(ctx, plan, bind, replacement, others)
    loopback_targets = {"127.0.0.1", "::1", "localhost"}
    for target in targets:
        if target.host in loopback_targets:
            continue
        # nginx reaches gunicorn through one of the host's own addresses,
        # which a loopback bind no longer serves.
        directive = "server" if target.upstream else "proxy_pass http://"
        separator = " " if target.upstream else ""
        fix += f"\n{directive}{separator}{replacement};  (in {target.location})"
    return warning(
        f"gunicorn listens on every interface ({address}) while nginx fronts it",
        f"nginx proxies to port {bind.port} on this host, but other machines can"
        f" connect to {address} directly and skip nginx (its TLS, limits and"
        " access rules).",
        fix=fix,
        evidence=[bind.origin] + [_target_row(t) for t in targets],
        location=bind.location,
    )


# --- port-resolution ------------------------------------------------------------


@check(
    "port-resolution",
    area="port",
    title="A host name in bind gives the address nginx connects to",
    needs=("binds",),
)
def port_resolution(ctx: Context):
    """Warn when a host name in bind has several addresses and nginx tries others.

    gunicorn creates an IPv4 socket for a host name and Python's ``bind()``
    takes the first IPv4 address ``getaddrinfo`` returns, so
    ``bind = "localhost:8000"`` listens on ``127.0.0.1`` only, never on
    ``::1``. nginx resolves a ``proxy_pass`` name once, at start, and tries
    each of its addresses in turn: an address gunicorn does not listen on is
    refused and logged as an error before nginx moves on. Only names listed
    in ``/etc/hosts`` (the root's, under ``--root``) are resolved, so the
    doctor never sends a DNS query.
    """
    plan = _plan(ctx)
    named = [b for b in plan.binds if b.is_name]
    if not named:
        yield ok(
            "every bind is an IP address, a unix socket or a descriptor",
            ", ".join(b.describe() for b in plan.binds),
        )
        return
    try:
        nginx = ctx.fact("nginx")
    except FactUnavailable:
        nginx = None
    for bind in named:
        yield _resolution_finding(ctx, plan, bind, nginx)


def _resolution_finding(ctx, plan, bind: Bind, nginx) -> Finding:
    resolution = resolve_name(ctx, bind.host)
    evidence = [bind.origin]
    if resolution.problem:
        return info(
            f"{bind.host} in {bind.text} was not resolved",
            f"{resolution.problem}. gunicorn binds the first IPv4 address the"
            " name has when it starts.",
            evidence=evidence,
            location=bind.location,
        )
    evidence.append(
        f"{bind.host} -> {', '.join(resolution.nginx) or 'no address'}"
        f" ({resolution.how})"
    )

    if resolution.gunicorn is None:
        v6 = next((a for a in resolution.nginx if is_ipv6_literal(a)), "::1")
        return error(
            f"{bind.host} has no IPv4 address, so gunicorn cannot bind {bind.text}",
            "gunicorn creates an IPv4 socket for a host name, so bind() fails with"
            f" 'connection to {_gunicorn_address(bind)} failed' five times, then"
            " 'Can't connect to', and the master exits.",
            fix=_bind_fix(ctx, plan, bind, format_address(v6, bind.port)),
            evidence=evidence,
            location=bind.location,
        )

    bound = resolution.gunicorn
    exact = format_address(bound, bind.port)
    targets = _local_targets(ctx, nginx, bind)
    tried = _addresses_tried(ctx, targets)
    missed = [a for a in tried if a != bound]
    if missed:
        fix = _bind_fix(ctx, plan, bind, exact)
        for target in targets:
            if target.host == bound:
                continue
            if target.upstream:
                fix += f"\nserver {exact};  (in {target.location})"
            else:
                fix += f"\nproxy_pass http://{exact};  (in {target.location})"
        return warning(
            f"nginx tries {', '.join(tried)} on port {bind.port}, but gunicorn"
            f" binds only {bound} ({bind.text})",
            f"{bind.host} resolves to {', '.join(resolution.nginx)}, and gunicorn"
            f" listens on the first IPv4 address only. Each connection nginx"
            f" makes to {', '.join(missed)} is refused ('connect() failed (111:"
            " Connection refused) while connecting to upstream') before nginx"
            " tries the next address." + _addrconfig_note(resolution),
            fix=fix,
            evidence=evidence + [_target_row(t) for t in targets],
            location=bind.location,
        )

    others = [a for a in resolution.nginx if a != bound]
    if others:
        served = f" nginx connects to {bound}, which is served." if tried else ""
        return info(
            f"{bind.host} resolves to {', '.join(resolution.nginx)}; gunicorn binds"
            f" only {bound}",
            f"A client that connects to {bind.host}:{bind.port} over"
            f" {', '.join(others)} is refused.{served}",
            fix=_bind_fix(ctx, plan, bind, exact),
            evidence=evidence,
            location=bind.location,
        )
    return ok(
        f"{bind.host} resolves to {bound} only; gunicorn binds {exact}",
        evidence=evidence,
    )


def _addresses_tried(ctx: Context, targets) -> dict[str, list]:
    """Map each address nginx connects to for ``targets`` to those targets."""
    tried: dict[str, list] = {}
    for target in targets:
        if target.host and not is_ip_literal(target.host):
            addresses = resolve_name(ctx, target.host).nginx or (target.host,)
        else:
            addresses = (target.host,)
        for address in addresses:
            tried.setdefault(address, []).append(target)
    return tried


def _addrconfig_note(resolution) -> str:
    if resolution.how == RESOLVED_BY_GETADDRINFO:
        return ""
    return (
        " On a host with no IPv6 address other than ::1, nginx's AI_ADDRCONFIG"
        " lookup leaves out the IPv6 addresses."
    )


# --- port-privileged ------------------------------------------------------------


@check(
    "port-privileged",
    area="port",
    title="gunicorn may bind its ports",
    needs=("binds",),
)
def port_privileged(ctx: Context):
    """Fail when gunicorn binds a port below 1024 but does not start as root.

    Binding a port below ``net.ipv4.ip_unprivileged_port_start`` (1024
    unless changed) needs root or CAP_NET_BIND_SERVICE. gunicorn's master
    binds before its workers drop to ``user``, so what counts is the user the
    master starts as: the unit's ``User=`` (root without one), or the running
    master's user. ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` in the unit,
    or the capability on the running master, lifts the limit; sockets that
    systemd opens for socket activation are bound by systemd.
    """
    plan = _plan(ctx)
    limit, limit_source = _unprivileged_port_start(ctx)
    low = [
        b
        for b in plan.binds
        if b.kind == "tcp" and b.port is not None and 0 < b.port < limit
    ]
    if not low:
        ports = sorted({b.port for b in plan.binds if b.kind == "tcp"})
        yield ok(
            f"no port below {limit}"
            + (f" (ports: {', '.join(map(str, ports))})" if ports else ""),
            limit_source,
        )
        return
    activated = [b for b in low if b.activated]
    for bind in activated:
        yield ok(
            f"systemd binds {bind.describe()} for gunicorn",
            "systemd opens socket-activated sockets as root and passes them on.",
            evidence=[bind.origin],
        )
    own = [b for b in low if not b.activated]
    if not own:
        return
    master_user = _master_user(ctx)
    if master_user is None:
        for bind in own:
            yield info(
                f"{bind.describe()} is below {limit}: gunicorn must start as root",
                "No unit and no running master tell which user starts gunicorn;"
                " as any other user its bind() fails with 'Permission denied'.",
                evidence=[bind.origin, limit_source],
                location=bind.location,
            )
        return
    capable, capability_source = _has_bind_capability(ctx)
    for bind in own:
        evidence = [
            bind.origin,
            f"master starts as {master_user.name}: {master_user.source}",
        ]
        if master_user.is_root or capable:
            yield ok(
                f"gunicorn may bind {bind.describe()}",
                f"it starts as {master_user.name}"
                + (
                    f", with CAP_NET_BIND_SERVICE from {capability_source}"
                    if capable
                    else ""
                ),
                evidence=evidence,
            )
            continue
        name = _service_name(ctx) or "the service"
        moved = format_address(bind.host or "0.0.0.0", 8000)
        fix = (
            f"{_bind_fix(ctx, plan, bind, moved)} and point nginx at port 8000,"
            f" or add AmbientCapabilities=CAP_NET_BIND_SERVICE to [Service] of"
            f" {name}"
        )
        yield error(
            f"gunicorn binds {bind.describe()} (below {limit}) but starts as"
            f" {master_user.name}, not root",
            "Ports below the limit need root or CAP_NET_BIND_SERVICE. gunicorn"
            f" logs 'connection to {_gunicorn_address(bind)} failed: [Errno 13]"
            " Permission denied' five times, then 'Can't connect to' and exits.",
            fix=fix,
            evidence=evidence + [limit_source],
            location=bind.location,
        )


def _unprivileged_port_start(ctx: Context) -> tuple[int, str]:
    key = "net.ipv4.ip_unprivileged_port_start"
    if ctx.fs.is_live:
        path = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
        try:
            with open(path, encoding="ascii") as handle:
                value = int(handle.read().strip())
        except (OSError, ValueError):
            return PRIVILEGED_PORT_LIMIT, f"{path} is unreadable; assuming 1024"
        return value, f"{key} = {value} ({path})"
    for path in _sysctl_files(ctx):
        value = _sysctl_value(ctx, path, key)
        if value is not None:
            return value, f"{key} = {value} ({path})"
    return PRIVILEGED_PORT_LIMIT, f"{key} is not set under the root (default 1024)"


def _sysctl_files(ctx: Context) -> list[str]:
    """Return the sysctl files under the root, the one read last first.

    sysctl.d(5): a file in /etc hides a file of the same name in /run or
    /usr/lib, all files are read in the order of their names, and
    ``sysctl --system`` reads /etc/sysctl.conf after them. A later assignment
    wins.
    """
    import glob

    by_name: dict[str, str] = {}
    for directory in ("/usr/lib/sysctl.d", "/run/sysctl.d", "/etc/sysctl.d"):
        for host in glob.glob(str(ctx.fs.host(directory) / "*.conf")):
            by_name[posixpath.basename(host)] = ctx.fs.display(host)
    files = [by_name[name] for name in sorted(by_name)]
    files.append("/etc/sysctl.conf")
    return list(reversed(files))


def _sysctl_value(ctx: Context, path: str, key: str) -> int | None:
    try:
        text = ctx.fs.host(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    value = None
    for line in text.splitlines():
        name, sep, rest = line.partition("=")
        if sep and name.strip().replace("/", ".") == key:
            try:
                value = int(rest.strip())
            except ValueError:
                continue
    return value


def _has_bind_capability(ctx: Context) -> tuple[bool, str]:
    service = ctx.target.service
    if service is not None:
        granted = False
        source = ""
        for entry in service.unit.values("Service", "AmbientCapabilities"):
            value = entry.value.strip()
            inverted = value.startswith("~")
            names = value.lstrip("~").split()
            if inverted != ("CAP_NET_BIND_SERVICE" in names):
                granted = True
                source = f"AmbientCapabilities= at {entry.path}:{entry.line}"
        if granted:
            return True, source
    try:
        master = ctx.fact("master")
    except FactUnavailable:
        return False, ""
    try:
        with open(f"/proc/{master.pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    effective = int(line.split()[1], 16)
                    if effective >> CAP_NET_BIND_SERVICE_BIT & 1:
                        return True, f"effective capability of master pid {master.pid}"
    except (OSError, ValueError):
        pass
    return False, ""


# --- unix sockets ---------------------------------------------------------------


def _unix_binds(plan: BindPlan) -> list[Bind]:
    return [b for b in plan.binds if b.kind == "unix"]


@check(
    "port-unix-socket",
    area="port",
    title="gunicorn's unix sockets accept connections",
    needs=("binds", "listen_sockets", "process_table", "masters"),
    live=True,
)
def port_unix_socket(ctx: Context):
    """Fail when a unix socket gunicorn binds is missing, stale or not a socket.

    The check connects to each socket file (a local connection that sends no
    data). A file that no process accepts on is stale. A gunicorn killed with
    SIGKILL, by the OOM killer or by a crash leaves it behind, and nginx gets
    'Connection refused' and answers 502. gunicorn removes a stale socket
    file itself when it starts. A file that is not a socket makes gunicorn
    refuse to start.
    """
    plan = _plan(ctx)
    table = ctx.fact("listen_sockets")
    unix = _unix_binds(plan)
    if not unix:
        yield skipped("gunicorn binds no unix socket")
        return
    running = _running(ctx)
    for bind in unix:
        yield _socket_file_finding(ctx, bind, table, running)


def _start_command(ctx: Context) -> str:
    """Return the command that starts this deployment's gunicorn."""
    name = _service_name(ctx)
    if name is not None:
        return f"systemctl start {name}"
    target = ctx.target
    program = f"{target.venv.value}/bin/gunicorn" if target.venv else "gunicorn"
    chdir = shlex.quote(target.chdir.value) if target.chdir else "."
    return f"cd {chdir} && {program} {shlex.join(target.argv)}"


def _restart_command(ctx: Context, master) -> str:
    name = _service_name(ctx)
    if name is not None:
        return f"systemctl restart {name}"
    return f"kill -TERM {master.pid}, then start it again: {_start_command(ctx)}"


def _socket_file_finding(ctx: Context, bind: Bind, table, running: Running) -> Finding:
    path = bind.path
    if path.startswith(("\0", "@")):
        return info(
            f"{bind.describe()} is an abstract socket with no file",
            "Abstract sockets have no file to check; nginx cannot connect to them.",
            evidence=[bind.origin],
        )
    host = ctx.fs.host(path)
    master = running.current or (running.mine[-1] if running.mine else None)
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        if master is not None and not bind.activated:
            return error(
                f"{path} does not exist while master pid {master.pid} of this app runs",
                "The running master does not listen on this file: the file was"
                " removed after gunicorn bound it, or the master was started"
                " with another bind. nginx logs 'connect() to unix:"
                f"{path} failed (2: No such file or directory)' and answers 502.",
                fix=_restart_command(ctx, master),
                evidence=[bind.origin, master.process.row()],
                location=bind.location,
            )
        return info(
            f"{path} does not exist yet",
            "No gunicorn of this app runs; gunicorn creates the socket when it starts.",
            evidence=[bind.origin],
            location=bind.location,
        )
    except OSError as exc:
        return warning(
            f"{path} cannot be examined: {exc.strerror}",
            "The doctor could not stat the socket file.",
            fix="Run the doctor as root",
            evidence=[bind.origin],
        )

    row = describe_stat(ctx.fs, path, st)
    if not stat.S_ISSOCK(st.st_mode):
        return error(
            f"{path} exists but is not a socket",
            "gunicorn refuses to replace anything but a socket: it stops with"
            f" \"ValueError: '{path}' is not a socket\".",
            fix=f"rm {path}  (after checking what it is), or bind another path",
            evidence=[row, bind.origin],
            location=bind.location,
        )

    outcome = _connect(host)
    listeners = [s for s in table.sockets if s.family == "unix" and s.path == path]
    if outcome is None:
        return ok(
            f"{bind.describe()} accepts connections",
            evidence=[row] + [s.ss_row(running.table) for s in listeners],
        )
    evidence = [row, f"connect({path}): {outcome}"]
    if outcome.startswith(f"[Errno {errno.ECONNREFUSED}]"):
        if listeners:
            # The path is bound by a socket whose file was unlinked and
            # replaced: /proc/net/unix keeps the name it was bound to.
            evidence += [s.ss_row(running.table) for s in listeners]
        else:
            evidence.append(f"no socket is bound to {path} (/proc/net/unix)")
        if master is not None:
            return error(
                f"{path} is stale, but master pid {master.pid} of this app runs",
                "The file is not the socket the running master listens on (it"
                " was replaced or the master bound another path), so nginx gets"
                " 'Connection refused' and answers 502.",
                fix=_restart_command(ctx, master),
                evidence=evidence + [master.process.row()],
                location=bind.location,
            )
        return warning(
            f"{path} is stale: nothing accepts connections on it",
            "A gunicorn that was killed (SIGKILL, the OOM killer, a crash) left"
            f" the file behind. nginx logs 'connect() to unix:{path} failed (111:"
            " Connection refused)' and answers 502. gunicorn removes a stale"
            " socket file itself when it starts.",
            fix=_start_command(ctx),
            evidence=evidence,
            location=bind.location,
        )

    if outcome.startswith((f"[Errno {errno.EACCES}]", f"[Errno {errno.EPERM}]")):
        return info(
            f"the doctor may not connect to {path}",
            f"The doctor runs as uid {os.geteuid()}; run it as root to test the"
            " socket.",
            evidence=evidence,
        )
    return warning(
        f"connect() to {path} failed: {outcome}",
        "nginx's connections are likely to fail the same way.",
        fix=_restart_command(ctx, master) if master else _start_command(ctx),
        evidence=evidence,
        location=bind.location,
    )


def _connect(path) -> str | None:
    """Connect to a unix socket and close at once; return the error, or None."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CONNECT_TIMEOUT)
    try:
        probe.connect(str(path))
    except TimeoutError:
        return f"timed out after {CONNECT_TIMEOUT:g} s (accept queue full?)"
    except OSError as exc:
        return f"[Errno {exc.errno}] {exc.strerror}"
    finally:
        probe.close()
    return None


# --- port-socket-access ---------------------------------------------------------


def _nginx_user(ctx: Context) -> tuple[str, str]:
    """Return the user nginx's workers run as, and where that comes from."""
    try:
        config = ctx.fact("nginx")
    except FactUnavailable as exc:
        return "www-data", f"Debian's default, assumed because {exc.reason}"
    if config.master_pid is not None:
        try:
            table = ctx.fact("process_table")
        except FactUnavailable:
            table = {}
        workers = [p for p in table.values() if p.ppid == config.master_pid]
        users = sorted({p.user for p in workers if p.user})
        if len(users) == 1:
            return users[0], f"the user of nginx worker pid {workers[0].pid}"
    if config.user:
        return config.user, f"the user directive at {config.user_location}"
    return (
        "nobody",
        f"nginx's built-in default, because {config.main_file} has no user directive",
    )


def _setting_identity(ctx: Context, name: str) -> int | None:
    """Return the uid or gid a user/group setting names, when it is set."""
    settings = ctx.fact("settings")
    if settings.source(name).kind == "default":
        return None
    value = settings.get(name)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        entry = ctx.fs.user(value) if name == "user" else ctx.fs.group(value)
        if entry is not None:
            return entry.uid if name == "user" else entry.gid
    return None


def _umask(ctx: Context) -> int:
    value = ctx.fact("settings").get("umask") or 0
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return 0
    return int(value)


def _predicted_socket(ctx: Context, plan: BindPlan, bind: Bind, master_user):
    """Return (stat, how) for the socket file gunicorn or systemd will create."""
    if bind.activated:
        unit = plan.socket_unit.unit
        mode_entry = unit.value("Socket", "SocketMode")
        mode = int(mode_entry.value, 8) if mode_entry else SOCKET_UNIT_MODE
        user_entry = unit.value("Socket", "SocketUser")
        group_entry = unit.value("Socket", "SocketGroup")
        user = ctx.fs.user(user_entry.value) if user_entry else None
        group = ctx.fs.group(group_entry.value) if group_entry else None
        uid = user.uid if user else 0
        # systemd.socket(5): unset SocketUser= and SocketGroup= mean root.
        gid = group.gid if group else 0
        how = f"the socket unit creates it with SocketMode={mode:04o}"
    else:
        umask = _umask(ctx)
        mode = 0o777 & ~umask
        start_uid = (
            master_user.uid if master_user and master_user.uid is not None else 0
        )
        uid = _setting_identity(ctx, "user")
        gid = _setting_identity(ctx, "group")
        if uid is None:
            uid = start_uid
        if gid is None:
            entry = ctx.fs.user(uid)
            gid = entry.gid if entry else 0
        how = (
            f"gunicorn creates it with mode {mode:04o} from umask 0o{umask:03o},"
            " owned by its user and group settings"
        )
    st = os.stat_result((stat.S_IFSOCK | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))
    return st, how


@check(
    "port-socket-access",
    area="port",
    title="nginx can connect to gunicorn's unix sockets",
    needs=("binds", "settings"),
)
def port_socket_access(ctx: Context):
    """Fail when nginx's worker user cannot reach a unix socket, or gunicorn cannot create it.

    Connecting to a unix socket needs search (x) permission on every
    directory of its path and write permission on the socket file. The user
    is the one nginx's workers run as: the running workers' user, else the
    ``user`` directive, else nginx's default ``nobody``. When no nginx
    configuration is found, the check assumes Debian's ``www-data`` and
    states that in the evidence. The verdict comes from owners and mode bits
    (ACLs are not read) and names the first path component that blocks, as
    ``namei -l`` shows it. A socket that does not exist yet is judged by the
    mode gunicorn gives it (``umask``, ``user``, ``group``). gunicorn's own
    user needs write and search permission on the socket's directory to
    create it.
    """
    plan = _plan(ctx)
    unix = [b for b in _unix_binds(plan) if not b.path.startswith(("\0", "@"))]
    if not unix:
        yield skipped("gunicorn binds no unix socket file")
        return
    user, user_source = _nginx_user(ctx)
    who = identity_for(ctx.fs, user)
    master_user = _master_user(ctx)
    for bind in unix:
        findings = []
        if (
            not bind.activated
            and master_user is not None
            and master_user.identity is not None
        ):
            findings += _creator_findings(ctx, plan, bind, master_user)
        if who is None:
            findings.append(
                warning(
                    f"nginx's user {user} does not exist",
                    f"{user} ({user_source}) is not in"
                    f" {ctx.fs.host('/etc/passwd')}, so nginx fails to start.",
                    fix="user www-data;  (in nginx.conf, a user that exists)",
                )
            )
        else:
            findings += _nginx_access_findings(
                ctx, plan, bind, who, user_source, master_user, bool(findings)
            )
        yield from findings


def _nginx_access_findings(
    ctx, plan, bind, who: Identity, user_source, master_user, creator_reported
):
    fs = ctx.fs
    path = bind.path
    header = f"nginx's workers run as {who.name}: {user_source}"
    verdict = check_path(fs, path, who, WRITE)
    evidence = [header, f"namei -l {path}", *verdict.rows]
    proxied = _proxied_by_nginx(ctx, path)
    if proxied is False:
        evidence.insert(1, f"nginx's configuration does not proxy to unix:{path}")
    if verdict.ok:
        return [
            ok(
                f"{who.name} can connect to {bind.describe()}",
                header,
                evidence=evidence,
            )
        ]
    if verdict.blocking is not None:
        return [_blocked_finding(ctx, plan, bind, who, verdict, evidence)]

    # A component is missing: the socket, or a directory systemd creates, is
    # judged by the mode it will get.
    resolved, _ = fs.resolve(path)
    parent = posixpath.dirname(resolved)
    predictions = []
    if verdict.missing != resolved:
        created = _predicted_directories(ctx, plan, bind, parent)
        if created is None:
            if creator_reported:
                return []
            return [_blocked_finding(ctx, plan, bind, who, verdict, evidence)]
        predictions += created
    predictions.append((resolved, *_predicted_socket(ctx, plan, bind, master_user)))

    for component, st, how in predictions:
        evidence.append(describe_stat(fs, component, st) + f"  <- predicted: {how}")
        want = WRITE if component == resolved else EXECUTE
        if not allowed(st, who, want):
            reason = "write to" if want == WRITE else "search (x) the directory"
            predicted = PathVerdict(
                False, path, verdict.rows, blocking=component, reason=reason
            )
            return [_blocked_finding(ctx, plan, bind, who, predicted, evidence, st=st)]
    return [
        ok(
            f"{who.name} will be able to connect to {bind.describe()}",
            f"{header}. The socket does not exist yet, so its mode is predicted.",
            evidence=evidence,
        )
    ]


def _proxied_by_nginx(ctx: Context, path: str) -> bool | None:
    """Tell whether nginx proxies to the socket ``path``; None without a config."""
    try:
        nginx = ctx.fact("nginx")
    except FactUnavailable:
        return None
    resolved = ctx.fs.resolve(path)[0]
    return any(
        t.kind == "unix" and t.path and ctx.fs.resolve(t.path)[0] == resolved
        for t in nginx.proxy_targets
    )


def _predicted_directories(ctx, plan, bind, parent: str):
    """Return (path, stat, how) for each missing directory above the socket.

    Returns None when nothing creates one of them. ``/run`` is a tmpfs that
    systemd mounts at boot, so image trees often lack it. A socket unit
    creates every missing parent with ``DirectoryMode=``. A service creates
    its ``RuntimeDirectory=`` with ``RuntimeDirectoryMode=``, owned by
    ``User=`` and ``Group=``.
    """
    fs = ctx.fs
    existing = nearest_existing(fs, parent)
    missing = []
    current = parent
    while current != existing:
        missing.insert(0, current)
        current = posixpath.dirname(current)
    service = ctx.target.service
    runtime = runtime_directories(service)
    predictions = []
    for directory in missing:
        if directory == "/run":
            mode, uid, gid = 0o755, 0, 0
            how = "a tmpfs systemd mounts at boot"
        elif bind.activated:
            entry = plan.socket_unit.unit.value("Socket", "DirectoryMode")
            mode = int(entry.value, 8) if entry else SOCKET_UNIT_DIRECTORY_MODE
            uid = gid = 0
            how = f"the socket unit creates it with DirectoryMode={mode:04o}"
        elif directory in runtime:
            entry = service.unit.value("Service", "RuntimeDirectoryMode")
            mode = int(entry.value, 8) if entry else RUNTIME_DIRECTORY_MODE
            user = ctx.fs.user(service.user.value) if service.user else None
            group = ctx.fs.group(service.group.value) if service.group else None
            uid = user.uid if user else 0
            gid = user.gid if user else 0
            if group is not None:
                gid = group.gid
            how = f"systemd creates RuntimeDirectory with mode {mode:04o}"
        else:
            return None
        st = os.stat_result((stat.S_IFDIR | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))
        predictions.append((directory, st, how))
    return predictions


def _blocked_finding(ctx, plan, bind, who: Identity, verdict, evidence, st=None):
    fs = ctx.fs
    blocking = verdict.blocking or verdict.missing
    if verdict.missing and not verdict.blocking:
        return error(
            f"{verdict.missing} does not exist, so nginx cannot reach"
            f" {bind.describe()}",
            "nginx logs 'connect() ... failed (2: No such file or directory)'"
            " and answers 502.",
            fix=f"Create the directory or bind a path that exists: mkdir -p"
            f" {posixpath.dirname(bind.path)}",
            evidence=evidence,
            location=bind.location,
        )
    if st is None:
        try:
            st = os.stat(fs.host(blocking))
        except OSError:
            st = None
    is_socket = blocking == bind.path
    fix = _access_fix(ctx, plan, bind, who, blocking, st, is_socket)
    return error(
        f"{who.name} cannot {verdict.reason} {blocking}, so nginx cannot connect"
        f" to {bind.describe()}",
        f"nginx logs 'connect() to unix:{bind.path} failed (13: Permission"
        " denied) while connecting to upstream' and answers 502.",
        fix=fix,
        evidence=evidence,
        location=bind.location,
    )


def _access_fix(ctx, plan, bind, who: Identity, blocking, st, is_socket) -> str:
    fs = ctx.fs
    group = group_name(fs, st.st_gid) if st is not None else None
    group_bits = (st.st_mode >> 3) & 7 if st is not None else 0
    wanted = 2 if is_socket else 1
    if group is not None and group_bits & wanted:
        return (
            f"usermod -aG {group} {who.name}  (then restart nginx, so that its"
            " workers get the group)"
        )
    if is_socket:
        if bind.activated:
            return (
                f"SocketMode=0660 and SocketGroup={_primary_group(ctx, who)}  (in"
                f" {plan.socket_unit.path})"
            )
        return (
            f'umask = 0o007 and group = "{_primary_group(ctx, who)}"  (in the'
            " gunicorn config: the socket gets mode 0770 and nginx's group)"
        )
    stem = _service_stem(ctx)
    return (
        f"chmod o+x {blocking}  (search only, not listing), or put the socket"
        f" in a directory nginx may search, such as /run/{stem} with"
        f" RuntimeDirectory={stem}"
    )


def _primary_group(ctx: Context, who: Identity) -> str:
    entry = ctx.fs.user(who.uid)
    if entry is None:
        return who.name
    return group_name(ctx.fs, entry.gid)


def _creator_findings(ctx, plan, bind, master_user: MasterUser) -> list[Finding]:
    """Report when gunicorn's master cannot create the socket in its directory."""
    fs = ctx.fs
    parent = posixpath.dirname(bind.path)
    if not (fs.host(parent).is_dir()):
        existing = nearest_existing(fs, parent)
        if _predicted_directories(ctx, plan, bind, parent) is not None:
            return []
        return [
            error(
                f"{parent} does not exist, so gunicorn cannot create {bind.path}",
                "gunicorn's bind() fails with '[Errno 2] No such file or"
                " directory', five times, then 'Can't connect to' and the master"
                " exits.",
                fix=_directory_fix(ctx, parent, master_user),
                evidence=[bind.origin, f"nearest existing directory: {existing}"],
                location=bind.location,
            )
        ]
    verdict = check_path(fs, parent, master_user.identity, WRITE | EXECUTE)
    if verdict.ok:
        return []
    return [
        error(
            f"gunicorn (user {master_user.name}) cannot create {bind.path}:"
            f" {master_user.name} cannot {verdict.reason} {verdict.blocking}",
            "gunicorn's bind() fails with '[Errno 13] Permission denied', five"
            " times, then 'Can't connect to' and the master exits.",
            fix=_directory_fix(ctx, parent, master_user),
            evidence=[
                f"master starts as {master_user.name}: {master_user.source}",
                f"namei -l {parent}",
                *verdict.rows,
            ],
            location=bind.location,
        )
    ]


def _directory_fix(ctx: Context, parent: str, master_user: MasterUser) -> str:
    runtime = _runtime_name(parent)
    if runtime is not None and ctx.target.service is not None:
        return f"RuntimeDirectory={runtime}  (in [Service] of {ctx.target.unit.value})"
    return f"mkdir -p {parent} && chown {master_user.name} {parent}"


def _runtime_name(directory: str) -> str | None:
    for prefix in ("/run/", "/var/run/"):
        if directory.startswith(prefix) and directory != prefix.rstrip("/"):
            return directory[len(prefix) :]
    return None


# --- port-socket-location -------------------------------------------------------


@check(
    "port-socket-location",
    area="port",
    title="gunicorn's unix sockets are where nginx sees them",
    needs=("binds",),
)
def port_socket_location(ctx: Context):
    """Fail when a unix socket is in a private /tmp; warn when its /run directory vanishes.

    systemd's ``PrivateTmp=yes`` gives a service its own empty ``/tmp`` and
    ``/var/tmp``: a socket there is invisible to nginx when either nginx's
    unit or gunicorn's unit sets it, and nginx logs 'No such file or
    directory'. ``/run`` is a tmpfs emptied at boot, so a socket directory
    under it needs the unit's ``RuntimeDirectory=`` or a tmpfiles.d line, or
    gunicorn cannot bind after a reboot. systemd creates a RuntimeDirectory
    at start and removes it, socket included, when the service stops.
    """
    plan = _plan(ctx)
    unix = [b for b in _unix_binds(plan) if not b.path.startswith(("\0", "@"))]
    if not unix:
        yield skipped("gunicorn binds no unix socket file")
        return
    for bind in unix:
        yield from _location_findings(ctx, plan, bind)


def _location_findings(ctx: Context, plan: BindPlan, bind: Bind) -> list[Finding]:
    path = bind.path
    findings = []
    notes = []
    service = ctx.target.service
    if any(path.startswith(d + "/") for d in TMP_DIRECTORIES):
        findings += _private_tmp_findings(ctx, plan, bind, notes)
    runtime = [d for d in runtime_directories(service) if path.startswith(d + "/")]
    parent = posixpath.dirname(path).replace("/var/run/", "/run/", 1)
    if runtime:
        notes.append(
            f"{runtime[0]} is the unit's RuntimeDirectory: systemd creates it at"
            " start and removes it with the socket when the service stops, so"
            " while gunicorn is stopped nginx gets 'No such file or directory'"
            " instead of 'Connection refused'"
        )
    elif parent.startswith("/run/") and not bind.activated:
        if parent in tmpfiles_directories(ctx):
            notes.append(f"{parent} is created at boot by a tmpfiles.d line")
        else:
            name = _runtime_name(parent)
            unit = ctx.target.unit.value if ctx.target.unit else "the unit"
            findings.append(
                warning(
                    f"{parent} is under /run, and nothing recreates it after a reboot",
                    "/run is a tmpfs emptied at every boot. The unit has no"
                    f" RuntimeDirectory={name} and no tmpfiles.d line creates"
                    f" {parent}, so after a reboot gunicorn's bind() fails with"
                    " '[Errno 2] No such file or directory'.",
                    fix=f"RuntimeDirectory={name}  (in [Service] of {unit})",
                    evidence=[bind.origin],
                    location=bind.location,
                )
            )
    if findings:
        return findings
    return [
        ok(
            f"{bind.describe()} is where nginx can see it",
            "; ".join(notes) if notes else "",
            evidence=[bind.origin],
        )
    ]


def _private_tmp_findings(ctx, plan, bind: Bind, notes: list[str]) -> list[Finding]:
    path = bind.path
    service = ctx.target.service
    move = f"/run/{_service_stem(ctx)}/{posixpath.basename(path)}"
    fix = (
        f"{_bind_fix(ctx, plan, bind, 'unix:' + move)}\n"
        f"RuntimeDirectory={_service_stem(ctx)}  (in [Service] of the gunicorn unit)"
        f"\nproxy_pass http://unix:{move};  (in nginx's configuration)"
    )
    findings = []
    own = service.unit.value("Service", "PrivateTmp") if service else None
    if _truthy(own):
        findings.append(
            error(
                f"{path} is in gunicorn's private /tmp",
                f"The gunicorn unit sets PrivateTmp=yes ({own.path}:{own.line}), so"
                " the socket lives in a /tmp only gunicorn sees; nginx logs"
                f" 'connect() to unix:{path} failed (2: No such file or directory)'.",
                fix=fix,
                evidence=[bind.origin, f"PrivateTmp={own.value}"],
                location=bind.location,
            )
        )
    try:
        nginx = ctx.fact("nginx")
    except FactUnavailable as exc:
        notes.append(f"whether nginx has a private /tmp is unknown: {exc.reason}")
        return findings
    if nginx.private_tmp:
        findings.append(
            error(
                f"{path} is under /tmp, but nginx runs with PrivateTmp=yes",
                "nginx sees its own empty /tmp, not the one gunicorn creates the"
                f" socket in; it logs 'connect() to unix:{path} failed (2: No such"
                " file or directory)' and answers 502.",
                fix=fix,
                evidence=[bind.origin, "nginx.service: PrivateTmp=yes"],
                location=bind.location,
            )
        )
    elif nginx.private_tmp is None:
        notes.append(
            "nginx's systemd unit was not found, so whether it has PrivateTmp= is"
            " unknown"
        )
    return findings


def _service_stem(ctx: Context) -> str:
    name = _service_name(ctx)
    if name is None:
        return "gunicorn"
    return name.rsplit(".", 1)[0]
