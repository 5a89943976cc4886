"""Checks of gunicorn's PID file and of the unit's ``PIDFile=``."""

from __future__ import annotations

import os
import posixpath
import stat

from doctor import Context, FactUnavailable, Location, check, error, info, ok, warning
from doctor.facts.pidfile import (
    PidFilePlan,
    broken_link,
    canonical,
    find_creator,
    is_below,
    volatility,
)
from doctor.findings import Finding, skipped
from doctor.perms import EXECUTE, READ, WRITE, check_path, owner_name

# systemd.syntax(7) booleans that mean yes.
SYSTEMD_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})


def _no_pid_file(plan: PidFilePlan) -> Finding:
    return ok(
        "gunicorn writes no PID file",
        "The pidfile setting is not set, so gunicorn writes no PID file and there"
        " is nothing here to check.",
        evidence=[plan.described],
    )


def _owner_group(plan: PidFilePlan) -> tuple[str, str]:
    writer = plan.writer
    return writer.name, writer.group or writer.name


def _runtime_name(directory: str) -> str | None:
    """Return the ``RuntimeDirectory=`` name for a directory below /run, if any."""
    path = canonical(directory)
    if path != "/run" and is_below(path, "/run"):
        return path[len("/run/") :]
    return None


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _runtime_directory_fix(plan: PidFilePlan, name: str) -> str:
    user, group = _owner_group(plan)
    unit = plan.unit_name or "the unit"
    return (
        f"let systemd create it: add to the [Service] section of {unit} (it creates"
        f" /run/{name} owned by {user}:{group} at each start):\n"
        f"RuntimeDirectory={name}\n"
        "systemctl daemon-reload"
    )


def _create_fix(plan: PidFilePlan, directory: str) -> str:
    user, group = _owner_group(plan)
    install = f"install -d -o {user} -g {group} -m 0755 {directory}"
    name = _runtime_name(directory)
    if name is None:
        return install
    return (
        f"{_capitalized(_runtime_directory_fix(plan, name))}\n"
        f"Or create it by hand, which lasts until the next reboot:\n{install}"
    )


@check(
    "pidfile-directory",
    area="pidfile",
    title="gunicorn can create its PID file",
    needs=("settings", "pidfile"),
)
def pidfile_directory(ctx: Context):
    """Fail when the PID file's directory is missing or its user cannot write to it.

    The master writes the PID file at start, before it binds, as the user it
    runs as: the unit's User=, or root without one. gunicorn's own user and
    group settings switch only the workers. The master creates a temporary
    file in the directory and renames it over the PID file, so that user
    needs write and search permission on the directory and search permission
    on every directory above it. A missing directory stops gunicorn with
    "Error: DIR doesn't exist. Can't create pidfile.", and a directory it
    cannot write to stops it with a PermissionError traceback. In a sticky
    directory such as /tmp the rename also fails over a PID file owned by
    another user.
    """
    plan = ctx.fact("pidfile")
    if plan.path is None:
        yield _no_pid_file(plan)
        return
    fs = ctx.fs
    directory = plan.directory
    writer = plan.writer
    evidence = [plan.described, f"master user: {writer.name} ({writer.source})"]
    if plan.relative_to:
        evidence.append(f"relative to gunicorn's working directory {plan.relative_to}")
    problem = broken_link(fs, directory)
    if problem and "loop" in problem:
        yield error(
            f"the PID file's directory {directory} cannot be reached: {problem}",
            f"gunicorn stops at start with \"Error: {directory} doesn't exist."
            " Can't create pidfile.\"",
            fix="Replace the symlink loop with a real directory:\n"
            + _create_fix(plan, directory),
            evidence=evidence,
            location=plan.location,
        )
        return
    resolved = fs.resolve(directory)[0]
    host = fs.host(resolved)
    if not host.exists():
        yield _missing_directory(ctx, plan, evidence, problem)
        return
    if not host.is_dir():
        yield error(
            f"the PID file's directory {directory} is not a directory",
            f"gunicorn stops at start with \"Error: {directory} doesn't exist."
            " Can't create pidfile.\"",
            fix=f"Move {directory} away, then create the directory:\n"
            + _create_fix(plan, directory),
            evidence=evidence,
            location=plan.location,
        )
        return
    if writer.identity is None:
        raise FactUnavailable(
            f"the user {writer.name} ({writer.source}) is not in"
            f" {fs.display(fs.host('/etc/passwd'))}, so its permissions cannot be"
            " judged"
        )
    verdict = check_path(fs, directory, writer.identity, WRITE | EXECUTE)
    if not verdict.ok:
        yield _not_writable(ctx, plan, evidence, verdict)
        return
    sticky = _sticky_conflict(ctx, plan, resolved, evidence + verdict.rows)
    if sticky is not None:
        yield sticky
        return
    yield ok(
        f"{writer.name} can create the PID file {plan.path}",
        f"gunicorn's master runs as {writer.name} and can write to {directory}.",
        evidence=evidence + verdict.rows,
    )


def _missing_directory(
    ctx: Context, plan: PidFilePlan, evidence: list[str], link_problem: str | None
) -> Finding:
    fs = ctx.fs
    directory = plan.directory
    creator = find_creator(fs, plan, directory)
    if creator is not None and not creator.at_boot:
        return ok(
            f"systemd creates {directory} at each start",
            f"{directory} does not exist now, but {creator.kind} creates it, owned"
            f" by {plan.writer.name}, before systemd starts gunicorn.",
            evidence=[*evidence, creator.evidence],
        )
    if creator is not None and not fs.is_live:
        return ok(
            f"{directory} is created at boot by {creator.kind}",
            f"{directory} is not in the tree, but systemd-tmpfiles creates it at boot.",
            evidence=[*evidence, creator.evidence],
        )
    if creator is not None:
        return warning(
            f"the PID file's directory {directory} does not exist",
            f"{creator.kind} creates {directory} at boot, but it is missing now,"
            f" so gunicorn stops at start with \"Error: {directory} doesn't"
            " exist. Can't create pidfile.\" Something removed it after boot.",
            fix=f"systemd-tmpfiles --create {creator.path}",
            evidence=[*evidence, creator.evidence],
            location=plan.location,
        )
    rows = []
    if plan.writer.identity is not None:
        rows = check_path(fs, directory, plan.writer.identity, EXECUTE).rows
    what = (
        f"{link_problem}, so gunicorn stops at start"
        if link_problem
        else "Nothing creates it: no RuntimeDirectory= in the unit and no"
        " tmpfiles.d entry names it. gunicorn stops at start"
    )
    fix = _create_fix(plan, directory)
    if link_problem:
        fix = f"Repair or remove the symlink ({link_problem}), then:\n{fix}"
    return error(
        f"the PID file's directory {directory} does not exist",
        f"{what} with \"Error: {directory} doesn't exist. Can't create pidfile.\""
        " and exits with status 1.",
        fix=fix,
        evidence=[*evidence, *rows, f"{directory}: No such file or directory"],
        location=plan.location,
    )


def _not_writable(ctx: Context, plan: PidFilePlan, evidence: list[str], verdict):
    writer = plan.writer
    user, group = _owner_group(plan)
    directory = plan.directory
    resolved = ctx.fs.resolve(directory)[0]
    if verdict.blocking == resolved:
        fix = f"chown {user}:{group} {directory}"
        name = _runtime_name(directory)
        if name is not None:
            fix += f"\nOr {_runtime_directory_fix(plan, name)}"
    else:
        fix = (
            f"chmod o+x {verdict.blocking}  (lets every user pass through it), or"
            f" put the PID file in a directory {user} can reach, such as"
            f" /run/{_service_stem(plan)}/ with"
            f" RuntimeDirectory={_service_stem(plan)}"
        )
    return error(
        f"{writer.name} cannot create the PID file in {directory}",
        f"gunicorn's master runs as {writer.name} ({writer.source}) and creates a"
        f" temporary file in {directory} to rename it to"
        f" {posixpath.basename(plan.path)}, but {writer.name} cannot"
        f" {verdict.reason} {verdict.blocking}. gunicorn stops at start with"
        " PermissionError: [Errno 13] Permission denied.",
        fix=fix,
        evidence=evidence + verdict.rows,
        location=plan.location,
    )


def _service_stem(plan: PidFilePlan) -> str:
    if plan.unit_name:
        return plan.unit_name.rsplit(".", 1)[0]
    return "gunicorn"


def _sticky_conflict(
    ctx: Context, plan: PidFilePlan, resolved: str, evidence: list[str]
) -> Finding | None:
    """Report a PID file that rename() cannot replace in a sticky directory."""
    identity = plan.writer.identity
    state = plan.state
    if identity.is_root or state is None or state.owner_uid is None:
        return None
    directory_stat = os.stat(ctx.fs.host(resolved))
    if not directory_stat.st_mode & stat.S_ISVTX:
        return None
    if identity.uid in (state.owner_uid, directory_stat.st_uid):
        return None
    owner = owner_name(ctx.fs, state.owner_uid)
    return error(
        f"{identity.name} cannot replace {plan.path} in the sticky directory"
        f" {plan.directory}",
        f"{plan.directory} has the sticky bit, so only the owner of {plan.path}"
        f" ({owner}) or of the directory may replace it. gunicorn renames its"
        " new PID file over the old one and stops at start with"
        " PermissionError: [Errno 1] Operation not permitted.",
        fix=f"rm {plan.path}\nor give the PID file a directory of its own:"
        f" RuntimeDirectory={_service_stem(plan)} and"
        f' pidfile = "/run/{_service_stem(plan)}/{posixpath.basename(plan.path)}"',
        evidence=[*evidence, state.stat_row],
        location=plan.location,
    )


@check(
    "pidfile-content",
    area="pidfile",
    title="The PID file contains a PID gunicorn can read",
    needs=("settings", "pidfile"),
)
def pidfile_content(ctx: Context):
    """Fail when gunicorn's user cannot read the PID file; warn when it has no PID.

    At start gunicorn reads an existing PID file and parses it with int(): a
    file its user cannot read, or a directory in its place, stops it with a
    traceback. A file that is empty or not a number is ignored and replaced,
    but until the next start everything that reads the file fails:
    ``kill $(cat FILE)``, monitoring, systemd's PIDFile=. A file the doctor
    itself cannot read is reported as skipped, with the reason.
    """
    plan = ctx.fact("pidfile")
    if plan.path is None:
        yield _no_pid_file(plan)
        return
    state = plan.state
    path = plan.path
    evidence = [plan.described]
    if state.link:
        evidence.append(state.link)
    if state.kind == "missing":
        yield ok(
            f"{path} does not exist: there is no PID file to read",
            "gunicorn writes the file at start and removes it when it stops cleanly.",
            evidence=evidence,
        )
        return
    if state.kind == "dangling":
        yield warning(
            f"the PID file {path} is a symlink to a file that does not exist",
            "gunicorn replaces the symlink itself with a regular file at start,"
            " while whatever reads the PID file through the link finds nothing.",
            fix=f"rm {path}",
            evidence=evidence,
            location=plan.location,
        )
        return
    if state.kind == "unknown":
        yield skipped(
            f"{path} cannot be examined: {state.read_error} (the doctor runs as"
            f" uid {os.geteuid()}); run gunicorn-doctor as root"
        )
        return
    if state.kind in ("directory", "other"):
        what = "a directory" if state.kind == "directory" else "not a regular file"
        yield error(
            f"the PID file {path} is {what}",
            f"gunicorn opens {path} at start to read the pid of a running master"
            " and stops with a traceback when it is not a regular file.",
            fix=f"Move {path} away, or set pidfile to a file path.",
            evidence=[*evidence, state.stat_row],
            location=plan.location,
        )
        return
    yield from _file_content(ctx, plan, evidence)


def _file_content(ctx: Context, plan: PidFilePlan, evidence: list[str]):
    state = plan.state
    path = plan.path
    writer = plan.writer
    user, group = _owner_group(plan)
    if writer.identity is not None:
        verdict = check_path(ctx.fs, path, writer.identity, READ)
        if not verdict.ok and verdict.missing is None:
            doctor_read = []
            if state.read_error:
                doctor_read = [
                    (
                        f"the doctor (uid {os.geteuid()}) cannot read it either:"
                        f" {state.read_error}"
                    )
                ]
            yield error(
                f"{writer.name} cannot read the PID file {path}",
                f"At start gunicorn's master, running as {writer.name}, opens the"
                f" existing PID file to see whether another master runs, but"
                f" {writer.name} cannot {verdict.reason} {verdict.blocking}. It"
                " stops with PermissionError: [Errno 13] Permission denied.",
                fix=f"chown {user}:{group} {path}\nor, when no master runs: rm {path}",
                evidence=[*evidence, *verdict.rows, *doctor_read],
                location=plan.location,
            )
            return
    if state.read_error:
        yield skipped(
            f"{path} cannot be read by the doctor (uid {os.geteuid()}):"
            f" {state.read_error}; run gunicorn-doctor as root"
        )
        return
    if state.pid is None:
        yield _bad_content(plan, evidence)
        return
    yield ok(
        f"the PID file {path} contains pid {state.pid}",
        evidence=[*evidence, state.stat_row],
    )


def _bad_content(plan: PidFilePlan, evidence: list[str]) -> Finding:
    state = plan.state
    path = plan.path
    problem = state.content_problem
    shown = state.text if len(state.text) <= 60 else state.text[:57] + "..."
    rows = [*evidence, state.stat_row, f"content: {shown!r}"]
    fix = f"rm {path}\n{plan.restart_command()}  (gunicorn writes its pid at start)"

    consequence = (
        "gunicorn ignores such a file at start and replaces it, but until the"
        " next start everything that reads it fails: kill $(cat FILE),"
        " monitoring, systemd's PIDFile=."
    )
    text = state.text.strip()

    if "larger than any process id" in problem:
        return error(
            f"the PID file {path} does not contain a valid PID: {problem}",
            "gunicorn passes the number to kill(), which raises OverflowError, so"
            " gunicorn stops at start with a traceback.",
            fix=fix,
            evidence=rows,
            location=plan.location,
        )
    if text.startswith("-"):
        consequence = (
            "gunicorn passes the number to kill(), where a negative pid names a"
            " process group: if that group exists, gunicorn exits at start with"
            ' "Already running on PID". Until the next start everything else'
            " that reads the file fails too."
        )

    title = (
        f"the PID file {path} is empty"
        if problem == "it is empty"
        else f"the PID file {path} does not contain a PID"
    )
    return warning(
        title,
        f"{path}: {problem}. {consequence}",
        fix=fix,
        evidence=rows,
        location=plan.location,
    )


@check(
    "pidfile-stale",
    area="pidfile",
    title="The PID file names this deployment's running master",
    needs=("settings", "pidfile", "process_table", "masters"),
    live=True,
)
def pidfile_stale(ctx: Context):
    """Fail when the PID file names a live process other than this deployment's master.

    gunicorn checks only that the pid exists (``kill(pid, 0)``), not what runs
    under it: when another program has that pid now, the next start stops with
    "Already running on PID N (or pid file 'FILE' is stale)" and exits with
    status 1. A pid that no longer exists is a warning: the master that wrote
    it died without cleaning up (SIGKILL, the OOM killer, a crash). gunicorn
    replaces such a file at its next start, but until then ``kill $(cat
    FILE)`` and monitoring act on a pid the kernel may give to another
    program. Under --root the processes of the tree's host are unknown, so the
    check is skipped there.
    """
    plan = ctx.fact("pidfile")
    if plan.path is None:
        yield _no_pid_file(plan)
        return
    state = plan.state
    path = plan.path
    if not ctx.fs.is_live:
        subject = (
            f"{path} names pid {state.pid}, but whether it runs"
            if state.pid is not None
            else f"whether a master owns {path}"
        )
        raise FactUnavailable(
            f"{subject} cannot be known: the target is the tree under --root"
            f" {ctx.fs.root}, not this host's processes"
        )
    master = _this_master(ctx)
    if state.kind == "missing":
        yield _missing_with_master(plan, master)
        return
    if state.pid is None:
        problem = state.content_problem or state.read_error or f"it is {state.kind}"
        raise FactUnavailable(
            f"{path} contains no pid to look up ({problem}); pidfile-content reports it"
        )
    pid = state.pid
    process = ctx.fact("process_table").get(pid)
    if process is None and not _pid_exists(pid):
        yield _stale(plan, master)
        return
    masters = {m.pid: m for m in ctx.fact("masters")}
    chdir = ctx.target.chdir.value if ctx.target.chdir else None
    if master is not None and pid == master.pid:
        yield _matches(plan, master)
        return
    if pid in masters and chdir and masters[pid].process.cwd == chdir:
        yield _matches(plan, masters[pid])
        return
    if pid in masters:
        yield _other_deployment(plan, masters[pid])
        return
    yield _reused(plan, process, master)


def _this_master(ctx: Context):
    try:
        return ctx.fact("master")
    except FactUnavailable:
        return None


def _pid_exists(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def _already_running(plan: PidFilePlan, pid: int) -> str:
    return (
        f"Error: Already running on PID {pid} (or pid file '{plan.setting}' is stale)"
    )


def _missing_with_master(plan: PidFilePlan, master) -> Finding:
    path = plan.path
    if master is None:
        return ok(
            f"{path} does not exist and no master of this deployment runs",
            "Nothing is stale: gunicorn writes the file when it starts.",
            evidence=[plan.described],
        )
    return warning(
        f"the master (pid {master.pid}) runs, but its PID file {path} is missing",
        "gunicorn writes the file at start, so something removed it since (a"
        " cleanup of the directory, such as systemd-tmpfiles ageing files in"
        " /tmp, or a script), or the master was started before the pidfile"
        " setting was added. kill $(cat FILE), monitoring and systemd's"
        " PIDFile= find no pid.",
        fix=f"{plan.restart_command()}  (gunicorn writes the file at start)",
        evidence=[plan.described, master.process.row()],
        location=plan.location,
    )


def _stale(plan: PidFilePlan, master) -> Finding:
    pid = plan.state.pid
    path = plan.path
    evidence = [plan.described, plan.state.stat_row, f"ps -p {pid}: no such process"]
    detail = (
        f"No process has pid {pid}. The master that wrote {path} stopped without"
        " removing it: it was killed (SIGKILL, the OOM killer) or crashed, since"
        " gunicorn removes the file only on a clean stop. gunicorn replaces a PID"
        " file whose process is gone at its next start, but until then kill"
        f" $(cat {path}) and monitoring act on pid {pid}, and if the kernel gives"
        " that pid to another program first, gunicorn exits at start with"
        ' "Already running on PID".'
    )
    if master is not None:
        detail += f" This deployment's master runs now as pid {master.pid}."
        evidence.append(master.process.row())
        fix = f"{plan.restart_command()}  (the new master writes its own pid)"
    else:
        fix = f"rm {path}"
        if plan.unit_name:
            fix += f"\nFind why the master died: journalctl -u {plan.unit_name} -n 50"
    return warning(
        f"{path} names pid {pid}, which is not running",
        detail,
        fix=fix,
        evidence=evidence,
        location=plan.location,
    )


def _matches(plan: PidFilePlan, master) -> Finding:
    workers = len(master.workers)
    return ok(
        f"{plan.path} names the running master, pid {master.pid}",
        f"The master has {workers} worker{'s' if workers != 1 else ''}.",
        evidence=[plan.described, master.process.row()],
    )


def _other_deployment(plan: PidFilePlan, other) -> Finding:
    pid = other.pid
    stem = _service_stem(plan)
    return error(
        f"{plan.path} names pid {pid}, a gunicorn master of another deployment",
        f"pid {pid} is a gunicorn master running in {other.process.cwd}, not in"
        " this deployment's directory. Two deployments share one PID file, so"
        f' whichever starts second stops with "{_already_running(plan, pid)}".',
        fix=f'Give this deployment its own PID file: pidfile = "/run/{stem}/{stem}.pid"'
        f" with RuntimeDirectory={stem} in its unit",
        evidence=[plan.described, other.process.row()],
        location=plan.location,
    )


def _reused(plan: PidFilePlan, process, master) -> Finding:
    pid = plan.state.pid
    path = plan.path
    name = process.name if process is not None else "another process"
    row = process.row() if process is not None else f"pid {pid}: cannot be inspected"
    detail = (
        f"pid {pid} now belongs to {name}, not to a gunicorn master. Most likely"
        f" the master that wrote {path} died and the kernel gave its pid to"
        " another program."
        " gunicorn checks only that the pid exists, so its next start stops with"
        f' "{_already_running(plan, pid)}" and exits with status 1.'
    )
    evidence = [plan.described, row]
    fix = f"rm {path}"
    if master is not None:
        detail += (
            f" This deployment's master (pid {master.pid}) keeps serving; the"
            " failure comes at the next restart or reboot."
        )
        evidence.append(master.process.row())
    else:
        fix += f"\n{plan.restart_command()}"
    return error(
        f"{path} names pid {pid}, which is now {name}, not gunicorn",
        detail,
        fix=fix,
        evidence=evidence,
        location=plan.location,
    )


@check(
    "pidfile-tmpfs",
    area="pidfile",
    title="The PID file's directory survives a reboot",
    needs=("settings", "pidfile"),
)
def pidfile_tmpfs(ctx: Context):
    """Warn when the PID file's directory is on a tmpfs and nothing recreates it.

    /run (and /var/run, a symlink to it) is a tmpfs: a directory made there
    by hand is gone after the next reboot, and gunicorn then stops at start
    with "Error: DIR doesn't exist. Can't create pidfile.". The unit's
    RuntimeDirectory= (at each start) or a ``d`` line in tmpfiles.d (at boot)
    recreates it. On the live host the filesystem type comes from
    /proc/self/mounts. Under --root, /run, /var/run and /dev/shm are assumed
    to be tmpfs, as on every systemd host, and nothing else is.
    """
    plan = ctx.fact("pidfile")
    if plan.path is None:
        yield _no_pid_file(plan)
        return
    fs = ctx.fs
    directory = plan.directory
    where = volatility(fs, directory)
    evidence = [plan.described, *where.evidence]
    if not where.volatile:
        if where.assumed:
            detail = (
                f"Under --root only /run, /var/run and /dev/shm are taken as"
                f" tmpfs; {directory} is outside them."
            )
            title = f"{directory} is not under /run or /dev/shm"
        else:
            detail = f"{where.fstype} keeps its content across reboots."
            title = f"{directory} is on {where.fstype}, mounted at {where.mount_point}"
        yield ok(title, detail, evidence=evidence)
        return
    resolved = canonical(fs.resolve(directory)[0])
    if resolved == canonical(where.mount_point):
        yield ok(
            f"{directory} is the tmpfs mount point itself, which exists at every boot",
            "pidfile-directory reports whether gunicorn's user can write to it.",
            evidence=evidence,
        )
        return
    creator = find_creator(fs, plan, directory)
    if creator is not None:
        when = "at boot" if creator.at_boot else "at each start of the service"
        yield ok(
            f"{creator.kind} recreates {directory} {when}",
            f"{directory} is on the tmpfs {where.mount_point}, which a reboot"
            f" empties, and {creator.kind} creates it again.",
            evidence=[*evidence, creator.evidence],
        )
        return
    yield _volatile_by_hand(ctx, plan, where, evidence)


def _volatile_by_hand(ctx: Context, plan: PidFilePlan, where, evidence) -> Finding:
    directory = plan.directory
    user, group = _owner_group(plan)
    exists = ctx.fs.host(ctx.fs.resolve(directory)[0]).is_dir()
    now = (
        "It was created by hand"
        if exists
        else "It does not exist now either (pidfile-directory reports that)"
    )
    conf = f"/etc/tmpfiles.d/{_service_stem(plan)}.conf"
    tmpfiles = (
        f"put this line in {conf} to create it at every boot:\n"
        f"d {canonical(directory)} 0755 {user} {group} -\n"
        f"systemd-tmpfiles --create {conf}"
    )
    name = _runtime_name(directory)
    if name is not None:
        fix = f"{_capitalized(_runtime_directory_fix(plan, name))}\nOr {tmpfiles}"
    else:
        fix = _capitalized(tmpfiles)
    return warning(
        f"{directory} is on a tmpfs and nothing recreates it at boot",
        f"{directory} is below {where.mount_point} ({where.fstype}), which is"
        f" empty after every reboot. {now}, and neither the unit's"
        " RuntimeDirectory= nor a tmpfiles.d entry creates it, so after the next"
        f" reboot gunicorn stops at start with \"Error: {directory} doesn't"
        " exist. Can't create pidfile.\"",
        fix=fix,
        evidence=evidence,
        location=plan.location,
    )


@check(
    "pidfile-unit",
    area="pidfile",
    title="systemd and gunicorn name the same PID file",
    needs=("settings", "pidfile", "unit"),
)
def pidfile_unit(ctx: Context):
    """Warn when the unit's PIDFile= and gunicorn's pidfile name different files.

    systemd reads PIDFile= to find the main process of a Type=forking service
    (gunicorn with daemon = True) and fails the start when that file does not
    appear ("Can't open PID file ... (yet?) after start"), so for
    Type=forking a mismatch is an error. For other types systemd tracks the
    process it started itself. PIDFile= below /var/run makes systemd log a
    warning at every load. A PID file in /tmp or /var/tmp with PrivateTmp=yes
    (or DynamicUser=yes) is inside the service's own /tmp, where nothing
    outside the service finds it.
    """
    unit = ctx.fact("unit")
    plan = ctx.fact("pidfile")
    service_type = unit.type.value if unit.type else "simple"
    forking = service_type == "forking"
    findings = []
    entry = unit.pid_file
    if entry is not None:
        findings.extend(_unit_pid_file_findings(ctx, plan, entry, service_type))
    elif forking:
        suggestion = f"PIDFile={canonical(plan.path)}" if plan.path else "PIDFile=..."
        findings.append(
            warning(
                f"{plan.unit_name} has Type=forking but no PIDFile=",
                "systemd has to guess which process is the service's main process"
                " after gunicorn forks into the background.",
                fix=f"{suggestion} in the [Service] section, then"
                " systemctl daemon-reload",
                evidence=[_unit_row(unit.type), plan.described],
                location=Location(unit.type.path, unit.type.line),
            )
        )
    private = _private_tmp(plan, unit)
    if private is not None:
        findings.append(private)
    if findings:
        yield from findings
        return
    if entry is None and plan.path is None:
        yield ok(
            f"neither gunicorn nor {plan.unit_name} names a PID file",
            f"systemd tracks the process it starts (Type={service_type}).",
            evidence=[plan.described],
        )
    elif entry is None:
        yield ok(
            f"{plan.unit_name} sets no PIDFile=; systemd tracks gunicorn itself",
            f"With Type={service_type} systemd knows the main process without a"
            f" PID file; gunicorn's {plan.path} serves other tools.",
            evidence=[plan.described],
        )
    else:
        yield ok(
            f"PIDFile= and gunicorn's pidfile both name {plan.unit_pid_file}",
            evidence=[_unit_row(entry), plan.described],
        )


def _unit_row(entry) -> str:
    return f"{entry.key}={entry.value} ({entry.path}:{entry.line})"


def _unit_pid_file_findings(ctx: Context, plan: PidFilePlan, entry, service_type: str):
    forking = service_type == "forking"
    location = Location(entry.path, entry.line)
    evidence = [_unit_row(entry), plan.described]
    unit_path = plan.unit_pid_file
    if plan.path is None:
        make = error if forking else warning
        consequence = (
            "With Type=forking systemd waits for that file after start and fails"
            f" the service with \"Can't open PID file {unit_path} (yet?) after"
            ' start".'
            if forking
            else f"systemd does not need it with Type={service_type}, but anything"
            " told to read the unit's PID file finds nothing."
        )
        yield make(
            f"the unit expects the PID file {unit_path}, but gunicorn writes none",
            f"The pidfile setting is not set. {consequence}",
            fix=f'pidfile = "{unit_path}" in the gunicorn config (or --pid'
            f" {unit_path} in ExecStart=), or remove PIDFile= from the unit",
            evidence=evidence,
            location=location,
        )
        return
    if not _same_file(ctx, unit_path, plan.path):
        make = error if forking else warning
        consequence = (
            "With Type=forking systemd waits for its file after start and fails"
            f" the service with \"Can't open PID file {unit_path} (yet?) after"
            ' start".'
            if forking
            else f"systemd tracks the main process itself with Type={service_type},"
            " but whoever follows the unit's PIDFile= reads the wrong file."
        )
        yield make(
            f"the unit has PIDFile={entry.value}, but gunicorn writes {plan.path}",
            consequence,
            fix=f"PIDFile={canonical(plan.path)} in the [Service] section of"
            f" {plan.unit_name}, then systemctl daemon-reload; or set gunicorn's"
            f' pidfile = "{unit_path}"',
            evidence=evidence,
            location=location,
        )
    raw = posixpath.normpath(entry.value)
    if is_below(raw, "/var/run"):
        yield info(
            f"PIDFile={entry.value} is below the legacy directory /var/run",
            "systemd rewrites it to "
            f'{canonical(raw)} and logs "PIDFile= references a path below legacy'
            ' directory /var/run/" each time it loads the unit.',
            fix=f"PIDFile={canonical(raw)}",
            evidence=evidence,
            location=location,
        )


def _same_file(ctx: Context, first: str, second: str) -> bool:
    if canonical(first) == canonical(second):
        return True
    fs = ctx.fs
    return canonical(fs.resolve(first)[0]) == canonical(fs.resolve(second)[0])


def _private_tmp(plan: PidFilePlan, unit) -> Finding | None:
    if plan.path is None:
        return None
    path = canonical(plan.path)
    if not (is_below(path, "/tmp") or is_below(path, "/var/tmp")):
        return None
    private_tmp = unit.unit.value("Service", "PrivateTmp")
    dynamic_user = unit.unit.value("Service", "DynamicUser")
    setting = None
    if private_tmp is not None and private_tmp.value.lower() in (
        *SYSTEMD_TRUE,
        "disconnected",
    ):
        setting = private_tmp
    elif dynamic_user is not None and dynamic_user.value.lower() in SYSTEMD_TRUE:
        setting = dynamic_user
    if setting is None:
        return None

    stem = _service_stem(plan)
    fix = f'pidfile = "/run/{stem}/{stem}.pid" with RuntimeDirectory={stem} in the unit'
    evidence = [_unit_row(setting), plan.described]
    private = (
        f"{setting.key}={setting.value} gives the service its own /tmp and"
        " /var/tmp, which are empty each time the service starts and appear on"
        f" the host as /tmp/systemd-private-*-{plan.unit_name}-*/."
    )
    if canonical(plan.directory) not in ("/tmp", "/var/tmp"):
        return error(
            f"{plan.directory} does not exist in the service's private /tmp",
            f"{private} gunicorn therefore finds no {plan.directory} there and"
            f" stops at start with \"Error: {plan.directory} doesn't exist. Can't"
            ' create pidfile."',
            fix=fix,
            evidence=evidence,
            location=Location(setting.path, setting.line),
        )
    return warning(
        f"gunicorn writes {plan.path} inside the service's private /tmp",
        f"{private} Nothing outside the service finds the file at {plan.path},"
        " systemd's PIDFile= included.",
        fix=fix,
        evidence=evidence,
        location=Location(setting.path, setting.line),
    )
