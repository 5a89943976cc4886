"""Checks of gunicorn's logs: where the lines go, who can open the files, free
space, and whether log rotation leaves gunicorn writing to the rotated file."""

from __future__ import annotations

import math
import os
import posixpath
import re
import stat
from typing import NamedTuple

from doctor import Context, FactUnavailable, Location, check, error, info, ok, warning
from doctor.facts.logfiles import (
    LogFile,
    LogrotateRule,
    LogSetup,
    LogStream,
    Opener,
    SignalCommand,
    StdioTarget,
    find_signal_commands,
    signal_option,
)
from doctor.findings import Finding
from doctor.perms import (
    EXECUTE,
    WRITE,
    PathVerdict,
    allowed,
    check_path,
    describe_stat,
    group_name,
    nearest_existing,
    owner_name,
)

# Free space or inodes below this share of the filesystem is a warning.
LOW_FREE_PERCENT = 5.0
# systemd.exec(5): UMask= defaults to 0022 for system services.
SYSTEMD_DEFAULT_UMASK = 0o022
LOG_ROOT = "/var/log"


def _open_failure(log: LogFile, errno_name: str) -> str:
    """Return how gunicorn 20.0 to 27.x fails at start when it cannot open ``log``."""
    exception = {
        "EACCES": ("PermissionError", 13, "Permission denied"),
        "ENOENT": ("FileNotFoundError", 2, "No such file or directory"),
    }[errno_name]
    name, number, text = exception
    if log.setting in ("accesslog", "errorlog"):
        # util.check_is_writable raises RuntimeError("Error: ...") and
        # Application.run prints it after another "Error: ".
        return (
            f"it exits with \"Error: Error: '{log.path}' isn't writable"
            f" [{name}({number}, '{text}')]\""
        )
    return f"it exits with \"{name}: [Errno {number}] {text}: '{log.path}'\""


def _where(setup: LogSetup) -> str:
    settings = setup.settings
    if settings.estimated:
        return f"settings: static estimate ({settings.estimate_reason})"
    return f"settings: resolved by gunicorn {settings.gunicorn_version}"


def _group_label(ctx: Context, opener: Opener) -> str:
    if opener.primary_gid is None:
        return opener.name
    return group_name(ctx.fs, opener.primary_gid)


# --- logs-destination -------------------------------------------------------------


@check(
    "logs-destination",
    area="logs",
    title="Log lines go where someone can read them",
    needs=("log_setup",),
)
def logs_destination(ctx: Context):
    """Fail when gunicorn's logging config file is missing; warn when log lines are lost.

    Looks at ``accesslog``, ``errorlog``, ``capture_output`` and the handlers
    of ``logconfig``, ``logconfig_json`` or ``logconfig_dict``. A value of
    ``-`` writes to stdout (access log) or stderr (error log): under systemd
    those go to the journal unless the unit's ``StandardOutput=`` or
    ``StandardError=`` send them elsewhere, and ``daemon = True`` sends them to
    /dev/null. Without a unit, a running master's file descriptors 1 and 2
    show where they go. A missing ``logconfig`` file stops gunicorn at start;
    a missing ``logconfig_json`` file is silently ignored. Destinations that
    only running the config would reveal are reported as not checked.
    """
    setup = ctx.fact("log_setup")
    findings = [*_missing_config_findings(setup)]
    good_rows = []
    # Logs whose stream ends in the same place get one finding.
    by_target: dict[tuple[str, str], list[LogStream]] = {}
    for stream in setup.streams:
        if stream.stream == "discarded":
            findings.append(_discarded_finding(stream))
            continue
        target = setup.stdio[stream.stream]
        if target.kind in ("null", "console", "unknown"):
            by_target.setdefault((target.kind, target.evidence), []).append(stream)
        else:
            good_rows.append(f"{stream.role} → {stream.stream} → {target.description}")
    for streams in by_target.values():
        findings.append(_stream_finding(setup, streams))
    for path, logs in setup.files_by_path().items():
        roles = ", ".join(log.role for log in logs)
        good_rows.append(f"{roles} → {path}")
    if setup.access_log_disabled:
        findings.append(_no_access_log(ctx, setup))
    for item in setup.unchecked:
        findings.append(
            info(
                f"{item.what} not checked: {item.reason}",
                "The doctor cannot tell where these lines go without running"
                " gunicorn, so it reports them as not checked rather than fine.",
                location=item.location,
            )
        )
    if good_rows:
        evidence = [_where(setup)]
        evidence += [log.origin for log in setup.files]
        evidence += [s.origin for s in setup.streams]
        used = {s.stream for s in setup.streams} & set(setup.stdio)
        evidence += [setup.stdio[name].evidence for name in sorted(used)]
        findings.append(ok("; ".join(good_rows), "", evidence=_unique(evidence)))
    if not findings:
        raise FactUnavailable("no log destination could be read from the settings")
    yield from findings


def _unique(rows: list[str]) -> list[str]:
    return list(dict.fromkeys(rows))


def _missing_config_findings(setup: LogSetup) -> list[Finding]:
    findings = []
    for missing in setup.missing_configs:
        if missing.gunicorn_exits:
            findings.append(
                error(
                    f"the logging config {missing.path} does not exist",
                    f'gunicorn exits at start with "Error: log config'
                    f" '{missing.path}' not found\".",
                    fix=f"Create {missing.path}, or remove the {missing.setting}"
                    " setting.",
                    evidence=[missing.origin],
                    location=missing.location,
                )
            )
        else:
            findings.append(
                warning(
                    f"the logging config {missing.path} does not exist and is ignored",
                    f"gunicorn applies {missing.setting} only when the file exists,"
                    " so it logs with its own defaults and says nothing about it.",
                    fix=f"Create {missing.path}, or remove the {missing.setting}"
                    " setting.",
                    evidence=[missing.origin],
                    location=missing.location,
                )
            )
    return findings


def _discarded_finding(stream: LogStream) -> Finding:
    return info(
        f"the {stream.role} is written to /dev/null",
        "Its lines are discarded on purpose.",
        evidence=[stream.origin],
        location=stream.location,
    )


def _stream_finding(setup: LogSetup, streams: list[LogStream]) -> Finding:
    """Judge logs written to stdout or stderr that end in one lost or unknown place."""
    target = setup.stdio[streams[0].stream]
    logs = " and ".join(f"the {s.role}" for s in streams)
    written = ", ".join(f"the {s.role} to {s.stream}" for s in streams)
    evidence = _unique([s.origin for s in streams] + [target.evidence])
    verb = "goes" if len(streams) == 1 else "go"
    if target.kind == "null":
        return warning(
            f"{logs} {verb} to /dev/null: the lines are lost",
            f"gunicorn writes {written}; {target.evidence}.",
            fix=_null_fix(target),
            evidence=evidence,
            location=target.location or streams[0].location,
        )
    return info(
        f"{logs} {verb} to {target.description}",
        f"gunicorn writes {written}. Without a systemd unit, the lines go"
        " wherever the program that starts gunicorn sends its output.",
        fix="Run gunicorn under systemd, whose journal keeps the lines, or give"
        " the log a file path.",
        evidence=evidence,
        location=streams[0].location,
    )


def _null_fix(target: StdioTarget) -> str:
    if target.cause == "daemon":
        return "daemon = False  (systemd keeps gunicorn in the foreground)"
    if target.cause in ("StandardOutput", "StandardError"):
        return (
            f"{target.cause}=journal  (in the [Service] section, then:"
            " systemctl daemon-reload)"
        )
    return (
        "Start gunicorn with its output captured (systemd, supervisord), or give"
        " the log a file path."
    )


def _no_access_log(ctx: Context, setup: LogSetup) -> Finding:
    settings = setup.settings
    if settings.source("accesslog").kind == "default":
        whose = (
            f"gunicorn {settings.gunicorn_version}'s default"
            if settings.gunicorn_version
            else "gunicorn's default"
        )
        detail = f"accesslog is None, {whose}: gunicorn logs no requests."
    else:
        detail = "accesslog is set to None: gunicorn logs no requests."
    return info(
        "gunicorn writes no access log",
        detail + " nginx's access log still records the requests it proxies.",
        fix='accesslog = "-"  (to the journal under systemd, or a file path)',
        evidence=[settings.describe("accesslog")],
        location=settings.location("accesslog"),
    )


# --- logs-writable ---------------------------------------------------------------


@check(
    "logs-writable",
    area="logs",
    title="The users that open the log files can write them",
    needs=("log_setup",),
)
def logs_writable(ctx: Context):
    """Fail when a log file's directory is missing or the master's user cannot write the file.

    The master opens every log file at start as the user systemd starts it as
    (``User=``, else root) and exits with "Error: '...' isn't writable" when
    it cannot. A root master then chowns the file to gunicorn's ``user``
    setting. On USR1 (log rotation) the workers reopen the files as that
    user, so every directory on the way must be searchable by it too. A
    worker that cannot reopen exits (warning). The verdicts come from owners
    and mode bits, walked the way ``namei -l`` prints them (ACLs are not
    read). A directory that the unit's ``LogsDirectory=`` names is created
    by systemd at start, owned by ``User=``.
    """
    setup = ctx.fact("log_setup")
    files = setup.files_by_path()
    if not files:
        raise FactUnavailable(_no_files_reason(setup))
    findings: list[Finding] = []
    rows: list[str] = []
    good_paths: list[str] = []
    blocked: dict[tuple, list[_Access]] = {}
    unknown_users: set[str] = set()
    for path, logs in files.items():
        special, row = _special_file(ctx, setup, path, logs)
        if special is not None:
            findings.append(special)
            continue
        if row is not None:
            rows.append(row)
            good_paths.append(path)
            continue
        path_ok = True
        for opener in _openers_to_check(setup):
            if opener.identity is None:
                unknown_users.add(opener.name)
                path_ok = False
                continue
            access = _check_access(ctx, setup, opener, path, logs)
            if access.verdict.ok:
                rows.append(access.row())
                continue
            path_ok = False
            verdict = access.verdict
            key = (opener.role, verdict.missing, verdict.blocking, verdict.reason)
            blocked.setdefault(key, []).append(access)
            if opener.role == "master":
                break
        if path_ok:
            good_paths.append(path)
    findings += [_blocked_finding(ctx, setup, group) for group in blocked.values()]
    findings += [_unknown_user_finding(setup, name) for name in sorted(unknown_users)]
    if good_paths:
        openers = [_opener_row(o) for o in _openers_to_check(setup)]
        findings.append(
            ok(
                f"{_openers_phrase(setup)} can open {', '.join(good_paths)}",
                evidence=openers + rows,
            )
        )
    yield from findings


class _Access(NamedTuple):
    """One user's permission verdict on one log file."""

    opener: Opener
    path: str
    role: str
    location: Location | None
    verdict: PathVerdict
    want: int
    # The first of the logs at ``path`` that gunicorn opens.
    log: LogFile

    def row(self) -> str:
        action = (
            "can search every directory to"
            if self.want == EXECUTE
            else ("can write" if self.want == WRITE else "can create files in")
        )
        return f"{self.opener.role} ({self.opener.name}) {action} {self.verdict.path}"


def _no_files_reason(setup: LogSetup) -> str:
    if setup.unchecked:
        return "no log file path could be read: " + "; ".join(
            f"{item.what}: {item.reason}" for item in setup.unchecked
        )
    return "gunicorn writes no log file (its logs go to stdout/stderr or nowhere)"


def _openers_phrase(setup: LogSetup) -> str:
    if setup.workers_differ:
        return f"{setup.master.name} (master) and {setup.workers.name} (workers)"
    return setup.master.name


def _opener_row(opener: Opener) -> str:
    return f"{opener.role}: {opener.name} ({opener.source})"


def _openers_to_check(setup: LogSetup) -> list[Opener]:
    openers = [setup.master]
    if setup.workers_differ:
        openers.append(setup.workers)
    return openers


def _special_file(
    ctx: Context, setup: LogSetup, path: str, logs: list[LogFile]
) -> tuple[Finding | None, str | None]:
    """Judge the cases that need no user's verdict: (problem, ok row) or (None, None).

    Those are a symlink loop, a directory where the file should be, a
    directory systemd creates (LogsDirectory=), and a file systemd opens.
    """
    fs = ctx.fs
    role = _roles(logs)
    location = logs[0].location
    resolved, problem = fs.resolve(path)
    if problem and "loop" in problem:
        return error(
            f"the {role} {path} cannot be opened: {problem}",
            "Opening it fails with 'Too many levels of symbolic links'.",
            fix=f"Replace the symlink with a file: rm {path}",
            location=location,
        ), None
    if fs.host(resolved).is_dir():
        return error(
            f"the {role} {path} is a directory",
            "Opening it for appending fails with IsADirectoryError, so gunicorn"
            " exits at start.",
            fix=f"Point the setting at a file inside it, such as {path}/gunicorn.log",
            location=location,
        ), None
    directory = posixpath.dirname(resolved)
    entry = _logs_directory_entry(ctx, directory)
    if entry is not None and not fs.host(directory).is_dir():
        return None, (
            f"{entry.key}={entry.value} ({entry.path}:{entry.line}): systemd creates"
            f" {directory} for {setup.master.name} at start"
        )
    if any(log.opener == "systemd" for log in logs):
        if fs.host(directory).is_dir():
            return None, f"systemd opens {path} as root"
        return error(
            f"the directory {_nearest_missing(ctx, directory)} of the {role}"
            " does not exist",
            f"systemd opens {path} before it starts gunicorn and does not create"
            " directories, so the service fails with status 209/STDOUT.",
            fix=f"install -d -m 0755 {directory}",
            location=location,
        ), None
    return None, None


def _roles(logs: list[LogFile]) -> str:
    return " and ".join(_unique([log.role for log in logs]))


def _logs_directory_entry(ctx: Context, directory: str):
    """Return the unit's LogsDirectory= entry that creates ``directory``, if any."""
    service = ctx.target.service
    if service is None:
        return None
    for entry in service.unit.values("Service", "LogsDirectory"):
        for name in entry.value.split():
            name = name.split(":", 1)[0]
            if posixpath.normpath(posixpath.join(LOG_ROOT, name)) == directory:
                return entry
    return None


def _nearest_missing(ctx: Context, path: str) -> str:
    """Return the first component of ``path`` that does not exist."""
    existing = nearest_existing(ctx.fs, path)
    rest = path[len(existing) :].lstrip("/").split("/")
    return posixpath.join(existing, rest[0]) if rest and rest[0] else path


def _check_access(
    ctx: Context, setup: LogSetup, opener: Opener, path: str, logs: list[LogFile]
) -> _Access:
    fs = ctx.fs
    resolved, _problem = fs.resolve(path)
    directory = posixpath.dirname(resolved)
    master = setup.master.identity
    if opener.role == "workers" and master is not None and master.is_root:
        # The root master creates the file and chowns it to the workers' user
        # at start, so the workers need only to reach it.
        target, want = directory, EXECUTE
    elif fs.host(resolved).exists():
        target, want = resolved, WRITE
    else:
        target, want = directory, WRITE | EXECUTE
    verdict = check_path(fs, target, opener.identity, want)
    return _Access(opener, path, _roles(logs), logs[0].location, verdict, want, logs[0])


def _files_phrase(accesses: list[_Access]) -> str:
    return " and ".join(f"the {a.role} {a.path}" for a in accesses)


def _blocked_finding(ctx: Context, setup: LogSetup, accesses: list[_Access]) -> Finding:
    first = accesses[0]
    opener, verdict = first.opener, first.verdict
    files = _files_phrase(accesses)

    evidence = [_opener_row(opener)]
    for target in _unique([a.verdict.path for a in accesses]):
        rows = next(a.verdict.rows for a in accesses if a.verdict.path == target)
        evidence += [f"namei -l {target}", *rows]

    if verdict.missing:
        # The checked path is the directory of the file, after symlinks.
        missing = _nearest_missing(ctx, verdict.path)
        directories = _unique([a.verdict.path for a in accesses])
        via = ""
        if verdict.path != posixpath.dirname(first.path):
            via = f" ({first.path} is a symlink into {verdict.path})"
        return error(
            f"the directory {missing} does not exist",
            f"It should hold {files}{via}. gunicorn does not create directories,"
            f" so the master cannot open {first.path} at start:"
            f" {_open_failure(first.log, 'ENOENT')}.",
            fix="\n".join(_install_dir_fix(ctx, setup, d) for d in directories),
            evidence=evidence,
            location=first.location,
        )
    if verdict.reason and verdict.reason.startswith("stat"):
        return info(
            f"{first.path} not checked: the doctor cannot {verdict.reason}"
            f" {verdict.blocking}",
            "The doctor cannot see the owner and mode it needs; run it as root.",
            evidence=evidence,
            location=first.location,
        )

    blocking = verdict.blocking
    owner, stat_row = _owner_phrase(ctx, blocking)
    evidence.append(stat_row)
    who = opener.name
    if blocking != verdict.path:
        title = f"{who} cannot search {blocking} ({owner}), on the way to {first.path}"
    elif first.want == WRITE:
        title = f"{who} cannot write {blocking} ({owner})"
    else:
        title = f"{who} cannot create files in {blocking} ({owner})"

    fix = _permission_fix(ctx, setup, first)
    if opener.role == "master":
        return error(
            title,
            f"The master runs as {who} ({opener.source}) and opens {files} at"
            f" start; {_open_failure(first.log, 'EACCES')}.",
            fix=fix,
            evidence=evidence,
            location=first.location,
        )
    return warning(
        title,
        f"The workers run as {who} ({opener.source}). They reopen {files} on"
        " USR1, the signal log rotation sends, and a worker that cannot exits;"
        " the master then starts a new one, dropping its requests.",
        fix=fix,
        evidence=evidence,
        location=first.location,
    )


def _owner_phrase(ctx: Context, path: str) -> tuple[str, str]:
    """Return ("owned by U:G with mode M", a stat-like evidence row) for ``path``."""
    try:
        st = os.stat(ctx.fs.host(path))
    except OSError as exc:
        return "not accessible", f"stat {path}: {exc.strerror}"
    owner, group = owner_name(ctx.fs, st.st_uid), group_name(ctx.fs, st.st_gid)
    mode = stat.filemode(st.st_mode)
    row = (
        f"stat {path}: Access: ({stat.S_IMODE(st.st_mode):04o}/{mode})"
        f"  Uid: ({st.st_uid}/{owner})  Gid: ({st.st_gid}/{group})"
    )
    return f"owned by {owner}:{group} with mode {mode}", row


def _permission_fix(ctx: Context, setup: LogSetup, access: _Access) -> str:
    opener = access.opener
    blocking = access.verdict.blocking
    user = opener.name
    if blocking != access.verdict.path:
        name = (setup.unit_name or "gunicorn").removesuffix(".service")
        return (
            f"chmod o+x {blocking}  (so {user} can search it), or move the logs to"
            f" a directory {user} can reach, such as {LOG_ROOT}/{name}"
        )
    if access.want == WRITE:
        return f"chown {user}:{_group_label(ctx, opener)} {blocking}"
    return _install_dir_fix(ctx, setup, blocking, opener)


def _unknown_user_finding(setup: LogSetup, name: str) -> Finding:
    opener = next(o for o in _openers_to_check(setup) if o.name == name)
    runs = "runs" if opener.role == "master" else "run"
    return info(
        f"the log files not checked for {name}: the user is not in /etc/passwd",
        f"The {opener.role} {runs} as {name} ({opener.source}), but the root's"
        " /etc/passwd does not list that user, so its uid and groups are unknown.",
        evidence=[_opener_row(opener)],
    )


def _install_dir_fix(
    ctx: Context, setup: LogSetup, directory: str, opener: Opener | None = None
) -> str:
    opener = opener or setup.master
    user, group = opener.name, _group_label(ctx, opener)
    fix = f"install -d -o {user} -g {group} -m 0755 {directory}"
    if setup.unit_name and posixpath.dirname(directory) == LOG_ROOT:
        fix += (
            f"\nor let systemd create it at each start: LogsDirectory="
            f"{posixpath.basename(directory)}  (in the unit's [Service] section)"
        )
    return fix


# --- logs-disk-space -------------------------------------------------------------


class _Mount(NamedTuple):
    source: str
    target: str
    fstype: str


@check(
    "logs-disk-space",
    area="logs",
    title="The filesystems holding the log files have free space and inodes",
    needs=("log_setup",),
)
def logs_disk_space(ctx: Context):
    """Fail when the filesystem of a log file is full; warn when under 5 % is free.

    Space and inodes come from ``statvfs`` on the directory that contains
    each log file, the numbers ``df -h`` and ``df -i`` print. The free share is
    the space left to unprivileged users (``df``'s Avail) over Used plus
    Avail, which is 100 minus ``df``'s Use%. A full filesystem makes every
    logging call in gunicorn fail with ENOSPC. Under ``--root`` the numbers
    are those of the filesystem the tree is on.
    """
    setup = ctx.fact("log_setup")
    files = setup.files_by_path()
    if not files:
        raise FactUnavailable(_no_files_reason(setup))
    by_device: dict[int, tuple[os.statvfs_result, str, list[str]]] = {}
    for path in files:
        anchor = nearest_existing(ctx.fs, posixpath.dirname(path))
        host = ctx.fs.host(anchor)
        try:
            device = os.stat(host).st_dev
            numbers = os.statvfs(host)
        except OSError as exc:
            yield info(
                f"free space for {path} not checked: statvfs {anchor} failed:"
                f" {exc.strerror}",
                location=files[path][0].location,
            )
            continue
        entry = by_device.setdefault(device, (numbers, str(host), []))
        entry[2].append(path)
    for numbers, host, paths in by_device.values():
        yield _space_finding(ctx, numbers, host, paths)


def _space_finding(ctx: Context, numbers: os.statvfs_result, host: str, paths):
    mount = _mount_of(host)
    block = numbers.f_frsize or numbers.f_bsize
    size = numbers.f_blocks * block
    used = (numbers.f_blocks - numbers.f_bfree) * block
    avail = numbers.f_bavail * block
    space_free = _free_percent(used, avail)
    inodes_used = numbers.f_files - numbers.f_ffree
    inodes_free = (
        _free_percent(inodes_used, numbers.f_favail) if numbers.f_files else None
    )

    space_row = (
        f"df -h: {mount.source} {_human(size)} {_human(used)} {_human(avail)}"
        f" {100 - math.floor(space_free)}% {mount.target}"
    )
    evidence = ["df -h: Filesystem Size Used Avail Use% Mounted on", space_row]
    if numbers.f_files:
        inode_row = (
            f"df -i: {mount.source} {numbers.f_files} {inodes_used}"
            f" {numbers.f_ffree} {100 - math.floor(inodes_free)}% {mount.target}"
        )
        evidence += ["df -i: Filesystem Inodes IUsed IFree IUse% Mounted on", inode_row]
    else:
        evidence.append(f"df -i: {mount.fstype} reports no inode counts")

    logs = ", ".join(paths)
    where = f"{mount.target} ({mount.fstype})"
    if not ctx.fs.is_live:
        where += ", the filesystem the --root tree is on"
    if numbers.f_bavail == 0 or (numbers.f_files and numbers.f_favail == 0):
        what = "space" if numbers.f_bavail == 0 else "inodes"
        return error(
            f"the filesystem holding {logs} has no free {what}",
            f"{where} is full, so every log line gunicorn writes fails with"
            " 'No space left on device', and a log file that does not exist yet"
            " cannot be created.",
            fix=_space_fix(what, mount, paths),
            evidence=evidence,
        )

    low = [
        f"{label} {free:.1f} % free"
        for label, free in (("space", space_free), ("inodes", inodes_free))
        if free is not None and free < LOW_FREE_PERCENT
    ]
    if low:
        return warning(
            f"the filesystem holding {logs} is almost full: {', '.join(low)}",
            f"{where} has less than {LOW_FREE_PERCENT:g} % free; once it is full,"
            " gunicorn's log writes fail with 'No space left on device'.",
            fix=_space_fix("space" if "space" in low[0] else "inodes", mount, paths),
            evidence=evidence,
        )
    inode_text = f", {inodes_free:.0f} % of inodes" if inodes_free is not None else ""
    return ok(
        f"{logs}: {_human(avail)} free ({space_free:.0f} %{inode_text}) on {where}",
        evidence=evidence,
    )


def _free_percent(used: int, available: int) -> float:
    total = used + available
    return 100.0 if total == 0 else available * 100.0 / total


def _space_fix(what: str, mount: _Mount, paths: list[str]) -> str:
    directory = posixpath.dirname(paths[0])
    if what == "inodes":
        return (
            f"du --inodes -x {mount.target} | sort -n | tail  (find the directories"
            " with the most files, then delete the old ones)"
        )
    return (
        f"du -xsh {directory}/* | sort -h | tail  (find what fills it), then"
        " delete or compress old logs and set up logrotate for them"
    )


def _human(size: int) -> str:
    """Format a size the way ``df -h`` does: rounded up, one decimal below 10."""
    value = float(size)
    for unit in ("", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            break
        value /= 1024
    if not unit:
        return str(size)
    if value < 10:
        return f"{math.ceil(value * 10) / 10:.1f}{unit}"
    return f"{math.ceil(value)}{unit}"


def _mount_of(host_path: str) -> _Mount:
    """Return the mount that contains ``host_path``, from /proc/self/mountinfo."""
    path = os.path.realpath(host_path)
    best = _Mount("-", "/", "unknown")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return best
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        target = _unescape_mount(fields[4])
        inside = path == target or path.startswith(target.rstrip("/") + "/")
        if inside and len(target) >= len(best.target):
            best = _Mount(_unescape_mount(tail[1]), target, tail[0])
    return best


def _unescape_mount(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


# --- logs-rotation ---------------------------------------------------------------


@check(
    "logs-rotation",
    area="logs",
    title="Log rotation makes gunicorn reopen its log files",
    needs=("log_setup", "logrotate"),
)
def logs_rotation(ctx: Context):
    """Warn when logrotate renames a gunicorn log without making gunicorn reopen it.

    gunicorn keeps writing to the file it opened. After logrotate renames
    ``access.log`` to ``access.log.1``, the lines go to the rotated file and
    the new one stays empty, unless the rule uses ``copytruncate`` or its
    ``postrotate`` script sends USR1 to the master. The accepted commands are
    ``kill -USR1`` with the pid file gunicorn writes,
    ``systemctl kill -s USR1 UNIT``, and ``systemctl reload UNIT`` when
    ``ExecReload=`` sends USR1 or HUP (HUP reopens the files too).

    Reads ``/etc/logrotate.conf`` and what it includes under the root. Also
    reports a file that logrotate skips because its directory is group- or
    world-writable and the rule has no ``su``, a new file that ``create``
    gives to a user the master or workers cannot write as, and, on the live
    host, a gunicorn process that still writes to a rotated or deleted file.
    A file log that no rule covers grows without bound (info).
    """
    setup = ctx.fact("log_setup")
    files = setup.files_by_path()
    if not files:
        if setup.unchecked:
            raise FactUnavailable(_no_files_reason(setup))
        yield ok(
            "gunicorn writes no log file, so there is nothing for logrotate to rotate",
            "Lines on stdout/stderr go to the journal under systemd, which"
            " rotates its own files.",
        )
        return
    config = ctx.fact("logrotate")
    findings: list[Finding] = []
    unrotated: list[LogFile] = []
    # Files that one rule covers and that gunicorn opens the same way get
    # one verdict.
    groups: dict[tuple, tuple[LogrotateRule, list[LogFile]]] = {}
    for path, logs in files.items():
        log = logs[0]
        if ctx.fs.host(path).is_dir():
            # logs-writable reports it: gunicorn cannot open a directory.
            continue
        if log.rotates_itself:
            findings.append(_self_rotating_finding(setup, log))
            continue
        match = config.rule_for(log.path)
        if match is None:
            unrotated.append(log)
            continue
        rule = match[0]
        key = (id(rule), log.opener, log.output_mode, log.reopens_itself)
        groups.setdefault(key, (rule, []))[1].append(log)
    if unrotated:
        findings.append(_no_rule_finding(setup, config, unrotated))
    for rule, logs in groups.values():
        findings += _rule_findings(ctx, setup, rule, logs)
    findings += _stale_handle_findings(ctx, list(files))
    yield from findings


def _rule_location(rule: LogrotateRule) -> Location:
    return Location(rule.path, rule.line)


def _logs_phrase(logs: list[LogFile]) -> str:
    return " and ".join(f"the {log.role} {log.path}" for log in logs)


def _paths_phrase(logs: list[LogFile]) -> str:
    return ", ".join(log.path for log in logs)


def _rule_findings(ctx, setup: LogSetup, rule: LogrotateRule, logs: list[LogFile]):
    log = logs[0]
    paths = _paths_phrase(logs)
    evidence = [f"{rule.path}:{rule.line}: {' '.join(rule.patterns)} {{ ... }}"]
    for item in logs:
        pattern = rule.matching_pattern(item.path)
        if pattern != item.path:
            evidence.append(f"the pattern {pattern} covers {item.path}")
    findings = _insecure_directory_findings(ctx, rule, logs, evidence)
    if rule.options.copytruncate:
        evidence.append(f"{rule.options.copytruncate_at}: copytruncate")
        if log.opener == "systemd" and log.output_mode == "file":
            findings.append(_sparse_file_finding(log, evidence))
        else:
            findings.append(
                ok(
                    f"{paths}: rotated with copytruncate",
                    "logrotate copies the file and truncates it in place, so"
                    " gunicorn keeps writing to the same file. Lines written"
                    " between the copy and the truncation are lost.",
                    evidence=evidence,
                )
            )
        return findings
    if log.opener == "systemd":
        findings.append(
            warning(
                f"{paths} is rotated without copytruncate, but systemd holds it open",
                f"systemd opened {log.path} for the service ({log.origin}), and no"
                " signal makes it reopen the file, so after rotation the lines go"
                " to the rotated file.",
                fix="Add copytruncate to the rule, and use append: for the output.",
                evidence=evidence,
                location=_rule_location(rule),
            )
        )
        return findings
    if log.reopens_itself:
        findings.append(
            ok(
                f"{paths}: {log.handler_class} reopens it after rotation",
                "WatchedFileHandler notices that the file was renamed and opens"
                " a new one.",
                evidence=evidence + [item.origin for item in logs],
            )
        )
        return findings
    findings += _signal_findings(ctx, setup, rule, logs, evidence)
    return findings


def _self_rotating_finding(setup: LogSetup, log: LogFile) -> Finding:
    workers = setup.settings.get("workers")
    evidence = [log.origin, setup.settings.describe("workers")]
    if isinstance(workers, int) and workers > 1:
        return warning(
            f"{log.path} is rotated by {log.handler_class} in each of {workers}"
            " workers",
            "Every worker process rotates the file on its own: the first one"
            " renames it, and the others keep writing to the renamed file or"
            " rotate again, so lines land in the wrong file or are overwritten.",
            fix="Use logging.handlers.WatchedFileHandler with a logrotate rule,"
            " or log to stderr and let the journal keep the lines.",
            evidence=evidence,
            location=log.location,
        )
    return ok(
        f"{log.path} is rotated by {log.handler_class} in the one worker",
        evidence=evidence,
    )


def _no_rule_finding(setup: LogSetup, config, logs: list[LogFile]) -> Finding:
    evidence = [f"logrotate config read: {config.entry}"]
    evidence += [f"read {name}" for name in config.files]
    return info(
        f"no logrotate rule covers {_logs_phrase(logs)}",
        "Nothing rotates "
        + ("it, so it grows" if len(logs) == 1 else "them, so they grow")
        + " until the filesystem is full.",
        fix=_rule_fix(setup, logs),
        evidence=evidence,
        location=logs[0].location,
    )


def _rule_fix(setup: LogSetup, logs: list[LogFile]) -> str:
    patterns = " ".join(
        _unique([f"{posixpath.dirname(log.path)}/*.log" for log in logs])
    )
    if setup.unit_name and not any(log.opener == "systemd" for log in logs):
        action = (
            "    postrotate\n"
            f"        systemctl kill --signal=USR1 {setup.unit_name}\n"
            "    endscript"
        )
    else:
        action = "    copytruncate"
    name = (setup.unit_name or "gunicorn").removesuffix(".service")
    return (
        f"cat > /etc/logrotate.d/{name} <<'EOF'\n"
        f"{patterns} {{\n"
        "    daily\n"
        "    rotate 14\n"
        "    compress\n"
        "    delaycompress\n"
        "    missingok\n"
        "    notifempty\n"
        f"{action}\n"
        "}\n"
        "EOF"
    )


def _insecure_directory_findings(ctx, rule: LogrotateRule, logs, evidence):
    """Report directories that logrotate rejects, as its logrotate.c does."""
    if rule.options.su is not None:
        return []
    findings = []
    for directory in _unique([posixpath.dirname(log.path) for log in logs]):
        try:
            st = os.stat(ctx.fs.host(directory))
        except OSError:
            continue
        group_writable = st.st_gid != 0 and st.st_mode & stat.S_IWGRP
        if not (group_writable or st.st_mode & stat.S_IWOTH):
            continue
        owner = owner_name(ctx.fs, st.st_uid)
        group = group_name(ctx.fs, st.st_gid)
        writers = "everyone" if st.st_mode & stat.S_IWOTH else f"the group {group}"
        findings.append(
            warning(
                f"logrotate skips the logs in {directory}: it is writable by {writers}",
                "Run as root, logrotate refuses to rotate in a directory that is"
                " world-writable or writable by a group other than root, unless"
                " the rule has an su directive: 'skipping ... because parent"
                " directory has insecure permissions'.",
                fix=f"chmod go-w {directory}, or add to the rule: su {owner} {group}",
                evidence=evidence + [describe_stat(ctx.fs, directory, st)],
                location=_rule_location(rule),
            )
        )
    return findings


def _sparse_file_finding(log: LogFile, evidence) -> Finding:
    key = log.origin.split("=", 1)[0]
    return warning(
        f"{log.path} is truncated by copytruncate while systemd writes it"
        " without O_APPEND",
        f"{log.origin} opens the file without O_APPEND, so after the truncation"
        " systemd keeps writing at its old offset and the file fills with NUL"
        " bytes up to it.",
        fix=f"{key}=append:{log.path}",
        evidence=evidence,
        location=log.location,
    )


def _signal_findings(ctx, setup: LogSetup, rule, logs: list[LogFile], evidence):
    commands = []
    for kind in ("postrotate", "lastaction"):
        script = rule.scripts.get(kind)
        if script is not None:
            commands += find_signal_commands(script)
    reopening = []
    problems = []
    for command in commands:
        problem = _command_problem(ctx, setup, command)
        if problem is None:
            reopening.append(command)
        else:
            problems.append((command, problem))

    paths = _paths_phrase(logs)
    if not reopening:
        if len(logs) == 1:
            consequence = (
                "After rotation gunicorn keeps writing to the renamed file, and the"
                f" new {paths} stays empty."
            )
        else:
            consequence = (
                "After rotation gunicorn keeps writing to the renamed files, and"
                " the new ones stay empty."
            )
        if problems:
            command, problem = problems[0]
            return [
                warning(
                    f"logrotate's rule for {paths} signals gunicorn, but {problem}",
                    consequence,
                    fix=_signal_fix(setup),
                    evidence=evidence
                    + [f"{rule.path}:{c.line}: {c.text}" for c, _ in problems],
                    location=Location(rule.path, command.line),
                )
            ]
        if rule.scripts:
            has = f"its {', '.join(sorted(rule.scripts))} script sends no USR1"
        else:
            has = "it has no postrotate script"
        return [
            warning(
                f"logrotate renames {_logs_phrase(logs)} without making gunicorn"
                " reopen them",
                f"The rule has no copytruncate and {has}. {consequence}",
                fix=_signal_fix(setup) + "\nor add copytruncate to the rule",
                evidence=evidence,
                location=_rule_location(rule),
            )
        ]

    command = reopening[0]
    evidence = evidence + [f"{rule.path}:{command.line}: {command.text}"]
    findings = []
    for log in logs:
        findings += _created_file_findings(ctx, setup, rule, log.path, evidence)
    if not findings:
        findings.append(
            ok(
                f"{paths}: logrotate's {_script_kind(rule, command)} makes gunicorn"
                f" reopen the files ({_describe_command(ctx, command)})",
                evidence=evidence,
            )
        )
    return findings


def _script_kind(rule: LogrotateRule, command: SignalCommand) -> str:
    before = [s for s in rule.scripts.values() if s.line < command.line]
    return max(before, key=lambda s: s.line).kind if before else "script"


def _describe_command(ctx: Context, command: SignalCommand) -> str:
    if command.how == "unit-reload":
        service = ctx.target.service
        signal = _reload_signal(service) if service is not None else None
        sends = f"sends {signal}" if signal else "is not known to the doctor"
        return f"systemctl reload {command.unit}, whose ExecReload {sends}"
    if command.how == "unit-restart":
        return f"it restarts {command.unit}"
    return f"SIG{command.signal}"


def _signal_fix(setup: LogSetup) -> str:
    if setup.unit_name:
        command = f"systemctl kill --signal=USR1 {setup.unit_name}"
    elif setup.settings.get("pidfile"):
        command = f"kill -USR1 $(cat {setup.settings.get('pidfile')})"
    else:
        return "Add copytruncate to the rule (gunicorn writes no pid file to signal)."
    return f"Add to the rule:\npostrotate\n    {command}\nendscript"


def _command_problem(ctx: Context, setup: LogSetup, command: SignalCommand):
    """Return why ``command`` does not make this gunicorn reopen, or None."""
    if command.how in ("unit-kill", "unit-reload", "unit-restart"):
        problem = _unit_problem(setup, command)
        if problem:
            return problem
    if command.how == "unit-reload":
        return _reload_problem(ctx, command)
    if command.how == "unit-restart":
        return None
    if command.signal not in ("USR1", "HUP"):
        return f"it sends SIG{command.signal}, not USR1"
    if command.signal == "HUP" and (
        command.how == "by-name"
        or (command.how == "unit-kill" and not command.main_only)
    ):
        return (
            "it sends HUP to every gunicorn process: the workers exit on HUP,"
            " only the master reloads"
        )
    if command.how == "pidfile":
        return _pidfile_problem(ctx, setup, command.pidfile)
    if "$MAINPID" in command.text or "${MAINPID}" in command.text:
        return "$MAINPID is set only in the unit's own commands, not in logrotate"
    return None


def _unit_problem(setup: LogSetup, command: SignalCommand) -> str | None:
    if command.unit is None:
        return "the command names no unit"
    if setup.unit_name is None:
        return None
    wanted = setup.unit_name.removesuffix(".service")
    if command.unit.removesuffix(".service") != wanted:
        return f"it names the unit {command.unit}, not {setup.unit_name}"
    return None


def _reload_problem(ctx: Context, command: SignalCommand) -> str | None:
    service = ctx.target.service
    if service is None:
        return None
    reload_entries = service.unit.values("Service", "ExecReload")
    if not reload_entries:
        return (
            f"the unit has no ExecReload=, so 'systemctl reload {command.unit}' fails"
        )
    if _reload_signal(service) is not None:
        return None
    texts = "; ".join(f"ExecReload={e.value}" for e in reload_entries)
    return f"its ExecReload= sends neither USR1 nor HUP ({texts})"


def _reload_signal(service) -> str | None:
    """Return USR1 or HUP when the unit's ExecReload= sends it with kill."""
    for entry in service.unit.values("Service", "ExecReload"):
        words = entry.value.lstrip("-@:+!").split()
        if words and posixpath.basename(words[0]) == "kill":
            signal = signal_option(words[1:])
            if signal in ("USR1", "HUP"):
                return signal
    return None


def _pidfile_problem(ctx: Context, setup: LogSetup, pidfile: str) -> str | None:
    candidates = set()
    value = setup.settings.get("pidfile")
    if isinstance(value, str) and value:
        candidates.add(_normalize_run(posixpath.join(setup.working_directory, value)))
    service = ctx.target.service
    if service is not None and service.pid_file is not None:
        candidates.add(_normalize_run(service.pid_file.value))
    if not candidates:
        return (
            f"it reads the pid from {pidfile}, and gunicorn writes no pid file"
            " (pidfile is not set)"
        )
    if _normalize_run(pidfile) not in candidates:
        return (
            f"it reads the pid from {pidfile}, while gunicorn writes its pid to"
            f" {', '.join(sorted(candidates))}"
        )
    return None


def _normalize_run(path: str) -> str:
    path = posixpath.normpath(path)
    if path == "/var/run" or path.startswith("/var/run/"):
        return path[len("/var") :]
    return path


# --- the file logrotate creates --------------------------------------------------


def _created_file_findings(ctx, setup: LogSetup, rule, path, evidence):
    """Check that the master and workers can reopen the file after rotation."""
    create = rule.options.create
    if setup.master.identity is None:
        return []
    if create is None:
        return _nocreate_findings(ctx, setup, rule, path, evidence)

    current = _stat_or_none(ctx, path)
    mode = create.mode
    if mode is None:
        mode = stat.S_IMODE(current.st_mode) if current else 0o644
    uid = _create_owner(ctx, create.owner, current, setup)
    gid = _create_group(ctx, create.group, current, setup)
    if uid is None or gid is None:
        unknown = create.owner if uid is None else create.group
        return [
            warning(
                f"logrotate's create directive names {unknown}, which does not exist",
                "logrotate rejects the rule with 'unknown user' or 'unknown group'"
                f" and does not rotate {path}.",
                fix="Name an existing user and group in create.",
                evidence=evidence,
                location=Location(create.path or rule.path, create.line),
            )
        ]

    created = os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))
    row = (
        f"{create.path}:{create.line}: create → {stat.filemode(created.st_mode)}"
        f" {owner_name(ctx.fs, uid)} {group_name(ctx.fs, gid)} {path}"
    )
    for opener in _openers_to_check(setup):
        if opener.identity is None or allowed(created, opener.identity, WRITE):
            continue
        return [_created_blocked(ctx, setup, opener, rule, create, path, row, evidence)]
    return []


def _created_blocked(ctx, setup, opener: Opener, rule, create, path, row, evidence):
    user, group = opener.name, _group_label(ctx, opener)
    if opener.role == "master":
        detail = (
            f"On USR1 the master ({user}) reopens {path} first; it cannot write"
            " the new file, logs 'Unhandled exception in main loop' and exits,"
            " which stops the whole server at the first rotation."
        )
        make = error
    else:
        detail = (
            f"On USR1 the workers ({user}) reopen {path}; they cannot write the"
            " new file and exit, and the master starts new ones, dropping their"
            " requests at every rotation."
        )
        make = warning
    return make(
        f"after rotation {path} belongs to a user {opener.name} cannot write as",
        detail,
        fix=f"create 0640 {user} {group}  (in the rule)",
        evidence=evidence + [row],
        location=Location(create.path or rule.path, create.line),
    )


def _nocreate_findings(ctx, setup: LogSetup, rule, path, evidence):
    """Without ``create`` the master makes the new file itself when it reopens."""
    master, workers = setup.master, setup.workers
    directory = posixpath.dirname(path)
    verdict = check_path(ctx.fs, directory, master.identity, WRITE | EXECUTE)
    umask = _unit_umask(ctx)
    mode = 0o666 & ~umask
    row = (
        f"no create: the master creates {path} as {master.name} with mode"
        f" {stat.filemode(stat.S_IFREG | mode)} (umask {umask:04o})"
    )
    if not verdict.ok and not verdict.missing:
        return [
            error(
                f"after rotation the master ({master.name}) cannot create {path}",
                "No create directive applies to the rule, so the master makes the"
                " new file itself when it reopens the logs on USR1. Because"
                f" {verdict.explain(master.identity)}, it logs 'Unhandled exception"
                " in main loop' and exits.",
                fix=f"create 0640 {master.name} {_group_label(ctx, master)}  (in the"
                " rule)",
                evidence=evidence + [row, *verdict.rows],
                location=_rule_location(rule),
            )
        ]

    if not setup.workers_differ or workers.identity is None:
        return []
    gid = master.primary_gid if master.primary_gid is not None else 0
    created = os.stat_result(
        (stat.S_IFREG | mode, 0, 0, 1, master.identity.uid, gid, 0, 0, 0, 0)
    )
    if allowed(created, workers.identity, WRITE):
        return []
    return [
        warning(
            f"after rotation the workers ({workers.name}) cannot reopen {path}",
            "No create directive applies to the rule, so the master creates the"
            f" new file as {master.name} when it reopens the logs. The workers"
            " then cannot write it and exit at every rotation, and the master"
            " starts new ones.",
            fix=f"create 0640 {workers.name} {_group_label(ctx, workers)}  (in the"
            " rule)",
            evidence=evidence + [row],
            location=_rule_location(rule),
        )
    ]


def _unit_umask(ctx: Context) -> int:
    service = ctx.target.service
    entry = service.unit.value("Service", "UMask") if service is not None else None
    if entry is not None:
        try:
            return int(entry.value, 8)
        except ValueError:
            pass
    return SYSTEMD_DEFAULT_UMASK


def _stat_or_none(ctx: Context, path: str):
    try:
        return os.stat(ctx.fs.host(path))
    except OSError:
        return None


def _create_owner(ctx: Context, owner: str | None, current, setup: LogSetup):
    if owner is not None:
        entry = ctx.fs.user(owner)
        return entry.uid if entry else None
    if current is not None:
        return current.st_uid
    # gunicorn's root master chowns the file it creates to the workers' user.
    master = setup.master.identity
    chosen = setup.workers.identity if master and master.is_root else master
    return chosen.uid if chosen else 0


def _create_group(ctx: Context, group: str | None, current, setup: LogSetup):
    if group is not None:
        entry = ctx.fs.group(group)
        return entry.gid if entry else None
    if current is not None:
        return current.st_gid
    return setup.workers.primary_gid if setup.workers.primary_gid is not None else 0


# --- live: files the processes still write to after rotation ----------------------


def _stale_handle_findings(ctx: Context, paths: list[str]) -> list[Finding]:
    """Find gunicorn processes that write to a rotated or deleted log file."""
    try:
        master = ctx.fact("master")
    except FactUnavailable:
        return []
    # rotated file → (log path, evidence rows, pids holding it)
    stale: dict[str, tuple[str, list[str], list[str]]] = {}
    for process in [master.process, *master.workers]:
        kind = "master" if process is master.process else "worker"
        for fd, target in _open_files(process.pid):
            path = _rotated_from(target, paths)
            if path is None:
                continue
            entry = stale.setdefault(target, (path, [], []))
            entry[1].append(f"ls -l /proc/{process.pid}/fd/{fd} -> {target}")
            entry[2].append(f"{process.pid} ({kind})")
    findings = []
    for target, (path, rows, pids) in stale.items():
        findings.append(
            warning(
                f"gunicorn still writes to {target}, not {path}",
                f"The processes {', '.join(pids)} hold a rotated or deleted copy"
                f" of {path} open, so their lines do not reach the current file.",
                fix=f"kill -USR1 {master.pid}  (now), and fix the logrotate rule",
                evidence=rows + [master.process.row()],
            )
        )
    return findings


def _open_files(pid: int) -> list[tuple[str, str]]:
    directory = f"/proc/{pid}/fd"
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        try:
            found.append((name, os.readlink(f"{directory}/{name}")))
        except OSError:
            continue
    return found


def _rotated_from(target: str, paths: list[str]) -> str | None:
    """Return the log path that ``target`` is a rotated or deleted copy of."""
    deleted = target.endswith(" (deleted)")
    name = target.removesuffix(" (deleted)")
    for path in paths:
        if name == path and deleted:
            return path
        if name.startswith((path + ".", path + "-")):
            return path
    return None
