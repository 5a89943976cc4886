"""Checks of the systemd service unit that starts gunicorn.

When systemd runs this host, the unit is read the way systemd has loaded it,
with ``systemctl show`` and ``systemctl cat`` (drop-ins included). Otherwise
the checks read the unit file and its ``NAME.service.d/*.conf`` drop-ins:
under ``--root``, in containers, and when systemd loads the unit from another
file than the one examined.

Other areas judge the neighbouring facts, and these checks do not repeat
them: ``venv-launcher`` reports an ExecStart= program outside the venv,
``config-daemon`` reports ``daemon = True``, ``pidfile-unit`` compares
PIDFile= with gunicorn's ``pidfile``, and ``pidfile-tmpfs`` and
``port-socket-location`` report a PID file or socket directory under /run
that nothing recreates after a reboot.
"""

from __future__ import annotations

import os
import posixpath
import pwd
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from doctor import Context, FactUnavailable, Location, check, error, info, ok, warning
from doctor.context import fact
from doctor.facts.pidfile import canonical, expand_specifiers, is_below
from doctor.findings import Finding, skipped
from doctor.perms import (
    EXECUTE,
    READ,
    WRITE,
    Identity,
    allowed,
    check_path,
    group_name,
    nearest_existing,
)
from doctor.redact import is_secret_name
from doctor.target import SYSTEMD_DEFAULT_PATH

if TYPE_CHECKING:
    from doctor.unitfile import (
        ExecCommand,
        ServiceSpec,
        UnitEntry,
        UnitFile,
        UnitProblem,
    )

# systemd.syntax(7): the strings systemd's parse_boolean() takes as true.
SYSTEMD_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
SERVICE_TYPES = frozenset(
    {"simple", "exec", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle"}
)
RESTART_VALUES = frozenset(
    {
        "no",
        "on-success",
        "on-failure",
        "on-abnormal",
        "on-watchdog",
        "on-abort",
        "always",
    }
)
KILL_MODES = frozenset({"control-group", "mixed", "process", "none"})
# gunicorn sends READY=1 through sd_notify() since 20.0.0.
FIRST_NOTIFY_RELEASE = (20, 0)
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
SYSTEMCTL_TIMEOUT = 10.0
# Properties read with systemctl show; FragmentPath and DropInPaths name the
# files that systemctl cat prints.
SHOW_PROPERTIES = ("LoadState", "FragmentPath", "DropInPaths", "NeedDaemonReload")
# Keys whose value, with a trailing comment glued on, stops the service from
# starting or starts the wrong thing, rather than only changing a detail.
START_KEYS = frozenset(
    {
        "ExecStart",
        "ExecStartPre",
        "ExecStartPost",
        "User",
        "Group",
        "WorkingDirectory",
        "EnvironmentFile",
        "Type",
        "PIDFile",
        "RootDirectory",
    }
)
# Words in a UnitProblem message that mean systemd refuses the file, the
# command or the start, as unitfile.py phrases its messages.
FATAL_WORDS = (
    "rejects",
    "does not start",
    "masked",
    "cannot be read",
    "does not exist",
    "binary file",
    "not valid UTF-8",
    "is a directory",
    "not a regular file",
    "symbolic link",
)
_INLINE_COMMENT = re.compile(
    r"systemd takes '(?P<comment>.*)' as part of the value of (?P<key>\S+); "
)

# The effect of each signal on gunicorn's master (gunicorn/arbiter.py).
SIGNAL_EFFECTS = {
    "USR1": "makes gunicorn reopen its log files only; it reloads neither the"
    " configuration nor the app",
    "USR2": "makes gunicorn start a second master from the executable on disk (a"
    " binary upgrade), which systemd does not track as the main process",
    "TERM": "stops gunicorn gracefully instead of reloading it",
    "INT": "stops gunicorn at once, dropping the requests in flight",
    "QUIT": "stops gunicorn at once, dropping the requests in flight",
    "KILL": "kills the master outright and leaves the workers without it",
    "TTIN": "adds one worker and reloads nothing",
    "TTOU": "removes one worker and reloads nothing",
    "WINCH": "stops the workers gracefully when gunicorn runs as a daemon",
}
# kill(1) signal numbers that are the same on every Linux architecture.
SIGNAL_NUMBERS = {"1": "HUP", "2": "INT", "3": "QUIT", "9": "KILL", "15": "TERM"}
RELOAD_FIX = "ExecReload=/bin/kill -s HUP $MAINPID"


# --- the unit as systemd loaded it ---------------------------------------------


class SystemctlError(Exception):
    """systemctl failed, or loads the unit from another file."""


@dataclass
class EffectiveUnit:
    """The service unit the systemd checks judge, and where it was read from.

    ``properties`` contains the ``systemctl show`` values when systemctl was
    run, and is empty when the unit was read from its files.
    """

    spec: ServiceSpec
    name: str
    source: str
    properties: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [self.spec.unit.path, *self.spec.unit.dropins]


def systemd_is_running(
    run_directory: str = "/run/systemd/system", init_comm: str = "/proc/1/comm"
) -> bool:
    """Tell whether systemd is PID 1: the sd_booted() test plus PID 1's name."""
    if not os.path.isdir(run_directory):
        return False
    try:
        with open(init_comm, encoding="utf-8") as handle:
            return handle.read().strip() == "systemd"
    except OSError:
        return False


def _systemctl(*args: str) -> str:
    """Run systemctl (the one on PATH) and return its output."""
    program = shutil.which("systemctl")
    if program is None:
        raise SystemctlError("systemctl is not on PATH")
    environment = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="")
    command = [program, "--no-pager", *args]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT,
            env=environment,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SystemctlError(
            f"{shlex.join(command)} timed out after {SYSTEMCTL_TIMEOUT:g} s"
        ) from None
    except OSError as exc:
        raise SystemctlError(f"{program} cannot run: {exc.strerror}") from None
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()
        reason = message[-1] if message else f"exit status {result.returncode}"
        raise SystemctlError(f"{shlex.join(command)} failed: {reason}")
    return result.stdout


def systemctl_show(name: str) -> dict[str, str]:
    """Return the SHOW_PROPERTIES of a unit as ``systemctl show`` prints them."""
    args = [f"--property={prop}" for prop in SHOW_PROPERTIES]
    properties = {}
    for line in _systemctl("show", name, *args).splitlines():
        key, equals, value = line.partition("=")
        if equals:
            properties[key] = value
    return properties


def parse_systemctl_cat(text: str, fragment: str, dropins: list[str]) -> UnitFile:
    """Split ``systemctl cat`` output into its files and parse each one.

    systemctl prints each file after a ``# PATH`` line. Only the paths that
    ``systemctl show`` named start a file, so a comment such as ``# /etc``
    inside a unit stays a comment. Line numbers count from each file's start.
    """
    from doctor.unitfile import UnitFile, parse_unit

    headers = {f"# {path}": path for path in [fragment, *dropins]}
    unit = UnitFile(path=fragment, entries=[], problems=[], dropins=[])
    current: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if current is None:
            return
        parsed = parse_unit("\n".join(lines), current)
        unit.entries.extend(parsed.entries)
        unit.problems.extend(parsed.problems)
        if current != fragment:
            unit.dropins.append(current)

    for line in text.splitlines():
        if line in headers:
            flush()
            current = headers[line]
            lines = []
        else:
            lines.append(line)
    flush()
    return unit


def read_effective_unit(name: str, unit_path: str) -> EffectiveUnit:
    """Read a unit the way systemd has loaded it, drop-ins included.

    Runs ``systemctl show`` and ``systemctl cat`` (whichever systemctl is on
    PATH). Raise SystemctlError when systemctl fails, does not know the unit,
    or loads it from another file than ``unit_path``.
    """
    from doctor.unitfile import service_spec

    properties = systemctl_show(name)
    load_state = properties.get("LoadState", "")
    fragment = properties.get("FragmentPath", "")
    if load_state == "not-found" or not fragment:
        raise SystemctlError(
            f"systemd has not loaded {name} (LoadState={load_state or 'unknown'})"
        )
    if os.path.realpath(fragment) != os.path.realpath(unit_path):
        raise SystemctlError(f"systemd loads {name} from {fragment}, not {unit_path}")
    dropins = properties.get("DropInPaths", "").split()
    unit = parse_systemctl_cat(_systemctl("cat", name), fragment, dropins)
    return EffectiveUnit(
        spec=service_spec(unit),
        name=name,
        source=f"systemctl cat {name}",
        properties=properties,
    )


@fact("systemd_unit")
def systemd_unit(ctx: Context) -> EffectiveUnit:
    """Return the service unit, from systemctl when systemd runs this host."""
    spec = ctx.fact("unit")
    path = ctx.target.unit.value
    name = posixpath.basename(path)
    notes = []
    if ctx.fs.is_live and systemd_is_running():
        try:
            return read_effective_unit(name, path)
        except SystemctlError as exc:
            notes.append(f"{exc}; the doctor read {path} and its drop-ins instead")
    return EffectiveUnit(
        spec=spec, name=name, source=f"{path} and its drop-ins", notes=notes
    )


# --- shared helpers -----------------------------------------------------------


def _where(entry: UnitEntry) -> str:
    return f"{entry.path}:{entry.line}"


def _row(entry: UnitEntry) -> str:
    return f"{entry.key}={entry.value} ({_where(entry)})"


def _location(entry: UnitEntry) -> Location:
    return Location(entry.path, entry.line)


def _anchor(unit: EffectiveUnit) -> Location:
    """Return where a missing [Service] setting belongs: next to ExecStart=."""
    entry = unit.spec.exec_start_entry
    return _location(entry) if entry else Location(unit.spec.unit.path)


def _is_true(entry: UnitEntry | None) -> bool:
    return entry is not None and entry.value.lower() in SYSTEMD_TRUE


def _capitalized(text: str) -> str:
    """Capitalize a sentence, except one that starts with a lowercase name."""
    if text.startswith(("systemd", "gunicorn")):
        return text
    return text[:1].upper() + text[1:]


def _stem(unit: EffectiveUnit) -> str:
    return unit.name.rsplit(".", 1)[0]


class ServiceUser(NamedTuple):
    """The user gunicorn's master starts as, and why that user.

    ``identity`` is None when the user cannot be judged: ``missing`` is then
    "user", "group" or "specifier", and ``problem`` is the reason in words.
    """

    name: str
    identity: Identity | None
    source: str
    group: str | None = None
    missing: str | None = None
    problem: str | None = None


def _root_identity() -> Identity:
    return Identity("root", 0, frozenset({0}))


def _lookup_user(ctx: Context, name: str) -> tuple[str, int, int] | None:
    """Return (name, uid, primary gid) from the root's passwd, or NSS when live."""
    entry = ctx.fs.user(name)
    if entry is not None:
        return entry.name, entry.uid, entry.gid
    if not ctx.fs.is_live:
        return None
    try:
        found = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        return None
    return found.pw_name, found.pw_uid, found.pw_gid


def _lookup_group(ctx: Context, name: str) -> int | None:
    entry = ctx.fs.group(name)
    if entry is not None:
        return entry.gid
    if not ctx.fs.is_live:
        return None
    import grp

    try:
        found = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except (KeyError, OverflowError):
        return None
    return found.gr_gid


def _service_user(ctx: Context, unit: EffectiveUnit) -> ServiceUser:
    """Work out the credentials systemd gives ExecStart=, per systemd.exec(5).

    The '+' and '!' prefixes make systemd skip the switch to User=. With
    Group= the process gets that group in place of the user's primary group,
    plus the groups of /etc/group that list the user and SupplementaryGroups=.
    """
    spec = unit.spec
    user = spec.user
    group = spec.group
    prefixes = spec.exec_start.prefixes if spec.exec_start else ""
    if "+" in prefixes or "!" in prefixes:
        return ServiceUser(
            "root",
            _root_identity(),
            f"the '{prefixes}' prefix of ExecStart= ({_where(spec.exec_start_entry)})"
            " runs it with full privileges, as root",
        )
    dynamic = spec.unit.value("Service", "DynamicUser")
    if user is None and not _is_true(dynamic):
        return ServiceUser(
            "root", _root_identity(), f"{unit.name} sets no User=, so systemd uses root"
        )
    name = user.value if user else _stem(unit)
    if "%" in name:
        return ServiceUser(
            name,
            None,
            _row(user),
            missing="specifier",
            problem=f"User={name} contains a specifier",
        )
    found = _lookup_user(ctx, name)
    if found is None and _is_true(dynamic):
        # A dynamic user has a uid no file belongs to, so only the "other"
        # permission bits apply to it.
        return ServiceUser(
            name,
            Identity(name, -1, frozenset()),
            f"DynamicUser=yes ({_where(dynamic)}): a transient user that owns no files",
        )
    if found is None:
        return ServiceUser(
            name,
            None,
            _row(user),
            missing="user",
            problem=f"the user {name} is not in /etc/passwd",
        )
    user_name, uid, primary_gid = found
    gids = set()
    group_label = None
    if group is not None:
        group_label = group.value
        gid = _lookup_group(ctx, group.value)
        if gid is None:
            return ServiceUser(
                user_name,
                None,
                _row(user),
                group=group.value,
                missing="group",
                problem=f"the group {group.value} is not in /etc/group",
            )
        gids.add(gid)
    else:
        gids.add(primary_gid)
    gids.update(g.gid for g in ctx.fs.groups.values() if user_name in g.members)
    for entry in spec.unit.values("Service", "SupplementaryGroups"):
        for word in entry.value.split():
            gid = _lookup_group(ctx, word)
            if gid is not None:
                gids.add(gid)
    source = f"User={user.value} ({_where(user)})" if user else _row(dynamic)
    return ServiceUser(
        user_name, Identity(user_name, uid, frozenset(gids)), source, group_label
    )


def _judgeable_user(ctx: Context, unit: EffectiveUnit) -> ServiceUser:
    """Return the service user, or skip when its permissions cannot be judged."""
    user = _service_user(ctx, unit)
    if user.identity is None:
        raise FactUnavailable(
            f"{user.problem}, so its permissions cannot be judged (systemd-user"
            " reports the user)"
        )
    return user


def _group_of(ctx: Context, user: ServiceUser) -> str:
    if user.group:
        return user.group
    if user.identity is not None and user.identity.uid >= 0:
        entry = ctx.fs.user(user.identity.uid)
        if entry is not None:
            return group_name(ctx.fs, entry.gid)
    return user.name


def _home_of(ctx: Context, user: ServiceUser) -> str | None:
    if user.name == "root":
        return "/root"
    entry = ctx.fs.user(user.name)
    return entry.home if entry is not None else None


def _expand_path(ctx: Context, unit: EffectiveUnit, user: ServiceUser, value: str):
    """Expand %h and the specifiers of doctor.facts.pidfile; None if any remain."""
    if "%h" in value:
        home = _home_of(ctx, user)
        if home is None:
            return None
        value = value.replace("%h", home)
    value = expand_specifiers(value, unit.name)
    return None if "%" in value else value


def _settings(ctx: Context):
    """Return gunicorn's settings, or None with the reason they are unknown."""
    try:
        settings = ctx.fact("settings")
    except FactUnavailable as exc:
        return None, exc.reason
    if settings.error:
        return None, "gunicorn did not finish loading its configuration"
    return settings, None


# --- systemd-unit -------------------------------------------------------------


@check(
    "systemd-unit",
    area="systemd",
    title="systemd reads every line of the unit",
    needs=("unit",),
)
def systemd_unit_check(ctx: Context):
    """Report every line of the unit and its drop-ins that systemd ignores or rejects.

    Covers lines outside a section, lines that are not KEY=VALUE, a trailing
    ``# comment`` after a value (systemd has no inline comments, so the
    comment becomes part of the value: on ExecStart= it turns into arguments
    for gunicorn), unreadable or masked files, a missing or unparsable
    ExecStart=, invalid Environment= words and relative paths. Each finding
    names the file and line. When systemd runs this host the unit is read
    with ``systemctl cat``, and a unit changed on disk since systemd loaded
    it (NeedDaemonReload=yes) is reported too.
    """
    unit = ctx.fact("systemd_unit")
    findings = [_problem_finding(problem) for problem in unit.spec.problems]
    findings += _property_findings(unit)
    findings += [
        info(note, "The findings of the systemd area describe the files on disk.")
        for note in unit.notes
    ]
    if findings:
        yield from findings
        return
    count = len(unit.spec.unit.entries)
    yield ok(
        f"systemd reads all {count} settings of {unit.name} without a problem",
        f"Read from {unit.source}.",
        evidence=unit.files,
    )


def _problem_finding(problem: UnitProblem) -> Finding:
    severity = error if _is_fatal(problem) else warning
    # The report's redaction takes "KEY=VALUE" for a secret named KEY.
    message = problem.message.replace("KEY=VALUE", "Name=value")
    head, _, fix = message.rpartition("; ")
    if not head:
        head, fix = message, ""

    where = f"{posixpath.basename(problem.path)}:{problem.line}"
    key = problem.text.partition("=")[0].strip() if "=" in problem.text else ""
    comment = _INLINE_COMMENT.match(problem.message)
    evidence = (
        [f"{problem.path}:{problem.line}: {problem.text}"] if problem.text else []
    )

    # Titles never quote an Environment= word or a whole command line, because
    # either may contain a secret. The detail does quote them, and the report
    # redacts secrets there.
    if comment:
        key = comment["key"]
        title = f"a comment on {where} becomes part of the value of {key}="
        head = (
            f"systemd has no inline comments: it takes '{comment['comment']}' as"
            f" part of the value of {key}"
        )
        if key == "ExecStart":
            head += ", so gunicorn receives the comment's words as arguments"
    elif key == "Environment":
        title = f"systemd ignores part of Environment= on {where}"
        evidence = []
    elif problem.message.startswith("ExecStart= is rejected"):
        title = f"systemd rejects ExecStart= on {where}"
    else:
        title = head.split("; ")[0]

    return severity(
        title,
        f"{_capitalized(head)}." if head else "",
        fix=_capitalized(fix) if fix else None,
        evidence=evidence,
        location=Location(problem.path, problem.line or None),
    )


def _is_fatal(problem: UnitProblem) -> bool:
    comment = _INLINE_COMMENT.match(problem.message)
    if comment:
        return comment["key"] in START_KEYS
    return any(word in problem.message for word in FATAL_WORDS)


def _property_findings(unit: EffectiveUnit) -> list[Finding]:
    properties = unit.properties
    findings = []
    load_state = properties.get("LoadState")
    if load_state and load_state != "loaded":
        findings.append(
            error(
                f"systemd has not loaded {unit.name}: LoadState={load_state}",
                "systemd does not start a unit that it could not load, or that is"
                " masked.",
                fix=f"systemctl status {unit.name}  (shows why), then fix the unit"
                f" or run: systemctl unmask {unit.name}",
                evidence=[f"LoadState={load_state}"],
            )
        )
    if properties.get("NeedDaemonReload") == "yes":
        findings.append(
            warning(
                f"{unit.name} changed on disk since systemd loaded it",
                "systemd still uses the old unit definition: the next start or"
                " restart runs the old ExecStart= and settings.",
                fix=f"systemctl daemon-reload && systemctl restart {unit.name}",
                evidence=["NeedDaemonReload=yes", *unit.files],
                location=Location(unit.spec.unit.path),
            )
        )
    return findings


# --- systemd-workdir ----------------------------------------------------------


@check(
    "systemd-workdir",
    area="systemd",
    title="The service user can enter WorkingDirectory=",
    needs=("unit", "settings"),
)
def systemd_workdir(ctx: Context):
    """Fail when WorkingDirectory= is missing or its user cannot enter and list it.

    systemd changes into the directory as the unit's User=, after dropping
    root, so that user needs search (x) permission on every directory above
    it and on the directory itself, or the start fails with status
    200/CHDIR. gunicorn then imports the app and reads ./gunicorn.conf.py
    from there; without read (r) permission Python cannot list the directory
    and the import fails with ModuleNotFoundError. A '-' prefix makes systemd
    ignore a failed chdir and start gunicorn in / instead. ``~`` and ``%h``
    are the user's home directory.
    """
    unit = ctx.fact("systemd_unit")
    entry = unit.spec.working_directory
    if entry is None:
        yield _no_working_directory(ctx, unit)
        return
    optional = entry.value.startswith("-")
    value = entry.value[1:] if optional else entry.value
    user = _judgeable_user(ctx, unit)
    if value == "~":
        value = "%h"
    path = _expand_path(ctx, unit, user, value)
    if path is None:
        raise FactUnavailable(
            f"WorkingDirectory={entry.value} contains a specifier the doctor"
            " cannot resolve here"
        )
    if not path.startswith("/"):
        raise FactUnavailable(
            f"WorkingDirectory={entry.value} is not absolute (systemd-unit reports it)"
        )
    evidence = [_row(entry), f"the service starts as {user.name}: {user.source}"]
    verdict = check_path(ctx.fs, path, user.identity, READ | EXECUTE)
    if verdict.ok:
        yield ok(
            f"{user.name} can enter and list WorkingDirectory {path}",
            evidence=[*evidence, *verdict.rows],
        )
        return
    evidence += [f"namei -l {path}", *verdict.rows]
    if verdict.missing is not None:
        yield _missing_working_directory(ctx, entry, path, verdict, optional, user)
        return
    host = ctx.fs.host(ctx.fs.resolve(path)[0])
    if host.exists() and not host.is_dir():
        yield error(
            f"WorkingDirectory {path} is not a directory",
            "systemd fails the start with status=200/CHDIR ('Changing to the"
            " requested working directory failed: Not a directory').",
            fix="Point WorkingDirectory= at the deployment directory.",
            evidence=evidence,
            location=_location(entry),
        )
        return
    yield _blocked_working_directory(
        ctx, entry, path, verdict, optional, user, evidence
    )


def _no_working_directory(ctx: Context, unit: EffectiveUnit) -> Finding:
    settings, _reason = _settings(ctx)
    chdir_set = "--chdir" in ctx.target.argv or any(
        arg.startswith("--chdir=") for arg in ctx.target.argv
    )
    if settings is not None and settings.source("chdir").kind != "default":
        chdir_set = True
    if chdir_set:
        return ok(
            f"{unit.name} sets no WorkingDirectory=, and gunicorn's chdir setting"
            " names its directory",
            "systemd starts gunicorn in /, and gunicorn changes to its chdir"
            " directory before it loads the app.",
        )
    directory = ctx.target.chdir.value if ctx.target.chdir else "/srv/app"
    return warning(
        f"{unit.name} sets no WorkingDirectory=, so gunicorn starts in /",
        "systemd starts a system service in /. gunicorn then looks for"
        " ./gunicorn.conf.py and imports the app module from /, and fails with"
        " ModuleNotFoundError unless the app is installed in the venv.",
        fix=f"WorkingDirectory={directory}  (in [Service], next to ExecStart=)",
        location=_anchor(unit),
    )


def _missing_working_directory(ctx, entry, path, verdict, optional, user) -> Finding:
    missing = verdict.missing
    evidence = [_row(entry), *verdict.rows, f"{missing}: No such file or directory"]
    group = _group_of(ctx, user)
    create = f"install -d -o {user.name} -g {group} -m 0755 {path}"
    if optional:
        return warning(
            f"WorkingDirectory {path} does not exist, so gunicorn starts in /",
            f"The '-' prefix makes systemd ignore the missing {missing} and start"
            " gunicorn in /, where it finds neither gunicorn.conf.py nor the app.",
            fix=f"Create it ({create}), or correct WorkingDirectory=.",
            evidence=evidence,
            location=_location(entry),
        )
    return error(
        f"WorkingDirectory {path} does not exist",
        f"{missing} is missing, so systemd fails the start with status=200/CHDIR"
        " ('Changing to the requested working directory failed: No such file or"
        " directory').",
        fix=f"Create it ({create}), or correct WorkingDirectory=.",
        evidence=evidence,
        location=_location(entry),
    )


def _blocked_working_directory(
    ctx, entry, path, verdict, optional, user, evidence
) -> Finding:
    blocking = verdict.blocking
    resolved = ctx.fs.resolve(path)[0]
    group = _group_of(ctx, user)
    who = user.name
    location = _location(entry)
    if blocking == resolved:
        fix = f"chgrp {group} {path} && chmod g+rx {path}, or chmod o+rx {path}"
        if allowed(os.stat(ctx.fs.host(resolved)), user.identity, EXECUTE):
            return error(
                f"{who} can enter WorkingDirectory {path} but cannot list it",
                f"{who} has no read (r) permission on {path}. systemd changes into"
                " it, but Python cannot list the directory, so gunicorn's import"
                " of the app fails with ModuleNotFoundError.",
                fix=fix,
                evidence=evidence,
                location=location,
            )
        cause = f"{who} has no search (x) permission on {path} itself"
    else:
        fix = (
            f"chmod o+x {blocking}  (search only, not listing), or chgrp {group}"
            f" {blocking} && chmod g+x {blocking}"
        )
        cause = f"{who} cannot {verdict.reason} {blocking}"
    if optional:
        return warning(
            f"{who} cannot enter WorkingDirectory {path}, so gunicorn starts in /",
            f"The service user {cause}. The '-' prefix makes systemd ignore the"
            " failed chdir and start gunicorn in /, where it finds neither"
            " gunicorn.conf.py nor the app.",
            fix=fix,
            evidence=evidence,
            location=location,
        )
    return error(
        f"{who} cannot enter WorkingDirectory {path}: blocked at {blocking}",
        f"systemd changes into the directory as {who}, and {cause}, so the start"
        " fails with status=200/CHDIR ('Changing to the requested working"
        " directory failed: Permission denied').",
        fix=fix,
        evidence=evidence,
        location=location,
    )


# --- systemd-execstart --------------------------------------------------------


@check(
    "systemd-execstart",
    area="systemd",
    title="systemd can execute the ExecStart= program as the service user",
    needs=("unit",),
)
def systemd_execstart(ctx: Context):
    """Fail when systemd cannot execute the ExecStart= program (status 203/EXEC).

    The program must exist and be a regular file with execute permission for
    the unit's User=, who also needs search permission on every directory
    above it. A script additionally needs read permission, and its ``#!``
    interpreter needs execute permission. A name without '/' is looked up in
    systemd's fixed search path (/usr/local/sbin, /usr/local/bin, /usr/sbin,
    /usr/bin), not in the unit's PATH=. Whether the program belongs to the
    venv is the job of venv-launcher.
    """
    unit = ctx.fact("systemd_unit")
    command = unit.spec.exec_start
    entry = unit.spec.exec_start_entry
    if command is None or entry is None:
        raise FactUnavailable(
            f"{unit.name} has no usable ExecStart= (systemd-unit reports why)"
        )
    user = _judgeable_user(ctx, unit)
    evidence = [_row(entry), f"the service starts as {user.name}: {user.source}"]
    path = expand_specifiers(command.path, unit.name)
    if "%" in path:
        raise FactUnavailable(
            f"the program path {command.path} contains a specifier the doctor"
            " cannot resolve here"
        )
    findings: list[Finding] = []
    if "/" not in path:
        resolved = _search_default_path(ctx, path)
        findings.append(_bare_name_finding(entry, path, resolved, evidence))
        if resolved is None:
            yield from findings
            return
        path = resolved
    elif not path.startswith("/"):
        raise FactUnavailable(
            f"the program path {path} is relative, which systemd rejects"
            " (systemd-unit reports it)"
        )
    findings += _program_findings(ctx, entry, path, user, evidence)
    yield from findings


def _search_default_path(ctx: Context, name: str) -> str | None:
    for directory in SYSTEMD_DEFAULT_PATH.split(":"):
        candidate = posixpath.join(directory, name)
        resolved, problem = ctx.fs.resolve(candidate)
        if problem is None and ctx.fs.host(resolved).is_file():
            return candidate
    return None


def _bare_name_finding(entry, name, resolved, evidence) -> Finding:
    if resolved is None:
        return error(
            f"ExecStart= names {name!r}, which is not in systemd's search path",
            f"systemd looks a program name without '/' up in {SYSTEMD_DEFAULT_PATH}"
            " only (not in PATH= of the unit), finds nothing and fails the start"
            " with status=203/EXEC.",
            fix="Write the absolute path of the venv's gunicorn in ExecStart=, such"
            " as ExecStart=/srv/app/venv/bin/gunicorn ...",
            evidence=evidence,
            location=_location(entry),
        )
    return warning(
        f"ExecStart= names {name!r}: systemd runs {resolved}",
        f"systemd looks a program name without '/' up in {SYSTEMD_DEFAULT_PATH}"
        f" only, not in PATH= of the unit, and finds {resolved}. systemd before"
        " version 239 rejects such a name.",
        fix=f"Write the absolute path in ExecStart=, such as {resolved} or the"
        " venv's bin/gunicorn.",
        evidence=evidence,
        location=_location(entry),
    )


def _program_findings(ctx, entry, path, user: ServiceUser, evidence) -> list[Finding]:
    fs = ctx.fs
    resolved, link_problem = fs.resolve(path)
    host = fs.host(resolved)
    if link_problem or not host.exists():
        what = link_problem or f"{path}: No such file or directory"
        fix = "Point ExecStart= at the absolute path of gunicorn in the venv."
        bin_dir = posixpath.dirname(path)
        if posixpath.basename(bin_dir) == "bin":
            venv = posixpath.dirname(bin_dir)
            fix += (
                f" To create that venv: python3 -m venv {venv} &&"
                f" {venv}/bin/pip install gunicorn"
            )
        return [
            error(
                f"the ExecStart= program {path} does not exist",
                f"{_capitalized(what)}, so systemd fails the start with"
                " status=203/EXEC ('Failed to locate executable' or 'Failed at"
                " step EXEC spawning ...: No such file or directory').",
                fix=fix,
                evidence=[*evidence, what],
                location=_location(entry),
            )
        ]

    if not host.is_file():
        return [
            error(
                f"the ExecStart= program {path} is not a regular file",
                "systemd fails the start with status=203/EXEC (Permission denied).",
                fix="Point ExecStart= at the gunicorn program itself.",
                evidence=evidence,
                location=_location(entry),
            )
        ]

    # The interpreter of a script must read it, so a script needs r as well.
    interpreter = _shebang_interpreter(host)
    want = EXECUTE | READ if interpreter else EXECUTE
    verdict = check_path(fs, path, user.identity, want)
    evidence = [*evidence, f"namei -l {path}", *verdict.rows]
    if not verdict.ok:
        return [_not_executable(ctx, entry, path, user, verdict, evidence)]
    if interpreter is None:
        return [
            ok(
                f"{user.name} can execute the ExecStart= program {path}",
                evidence=evidence,
            )
        ]
    return [_interpreter_finding(ctx, entry, path, interpreter, user, evidence)]


def _shebang_interpreter(host) -> str | None:
    try:
        with open(host, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line.split()[0] if line.split() else None


def _not_executable(ctx, entry, path, user: ServiceUser, verdict, evidence) -> Finding:
    resolved = ctx.fs.resolve(path)[0]
    blocking = verdict.blocking
    if blocking == resolved:
        fix = f"chmod a+rx {path}"
        cause = f"{user.name} cannot {verdict.reason} {path}"
    else:
        fix = (
            f"chmod o+x {blocking}  (search only), or chgrp"
            f" {_group_of(ctx, user)} {blocking} && chmod g+x {blocking}"
        )
        cause = f"{user.name} cannot {verdict.reason} {blocking}"
    return error(
        f"{user.name} cannot execute the ExecStart= program {path}",
        f"The service user {cause}, so systemd fails the start with status=203/EXEC"
        " ('Failed at step EXEC spawning ...: Permission denied').",
        fix=fix,
        evidence=evidence,
        location=_location(entry),
    )


def _interpreter_finding(
    ctx, entry, path, interpreter, user: ServiceUser, evidence
) -> Finding:
    evidence = [*evidence, f"{path}: #!{interpreter}"]
    resolved, problem = ctx.fs.resolve(interpreter)
    if problem or not ctx.fs.host(resolved).exists():
        return info(
            f"{user.name} can run {path}, but its interpreter {interpreter} is missing",
            "The kernel cannot start the script, so systemd fails the start with"
            " status=203/EXEC; venv-launcher and venv-interpreter report the"
            " broken interpreter.",
            evidence=evidence,
            location=_location(entry),
        )
    verdict = check_path(ctx.fs, interpreter, user.identity, EXECUTE)
    if not verdict.ok:
        return error(
            f"{user.name} cannot execute {interpreter}, the interpreter of {path}",
            f"{user.name} cannot {verdict.reason} {verdict.blocking}, so the kernel"
            " refuses to start the script and systemd fails the start with"
            " status=203/EXEC (Permission denied).",
            fix=f"chmod o+x {verdict.blocking}",
            evidence=[*evidence, f"namei -l {interpreter}", *verdict.rows],
            location=_location(entry),
        )
    return ok(
        f"{user.name} can execute the ExecStart= program {path} and its"
        f" interpreter {interpreter}",
        evidence=evidence,
    )


# --- systemd-user -------------------------------------------------------------


@check(
    "systemd-user",
    area="systemd",
    title="User= and Group= exist, and gunicorn does not run as root",
    needs=("unit", "settings"),
)
def systemd_user(ctx: Context):
    """Fail when User= or Group= does not exist, and warn when the master is root.

    systemd fails the start with status=217/USER for a user that is not in
    /etc/passwd (on the live host, any NSS source counts) and 216/GROUP for a
    missing group. Without User= (or with the '+' or '!' prefix on
    ExecStart=) gunicorn's master runs as root: gunicorn's own ``user``
    setting switches only the workers. ``DynamicUser=yes`` gives the service
    a transient user that owns no files and can write only to its
    RuntimeDirectory=, StateDirectory=, CacheDirectory= and LogsDirectory=.
    """
    unit = ctx.fact("systemd_unit")
    spec = unit.spec
    dynamic = spec.unit.value("Service", "DynamicUser")
    findings = []
    user = _service_user(ctx, unit)
    if user.name == "root" and user.identity is not None:
        findings.append(_root_finding(ctx, unit, user))
    elif _is_true(dynamic) and (user.identity is None or user.identity.uid < 0):
        findings.append(_dynamic_finding(unit, dynamic, user))
    elif user.identity is None:
        findings.append(_missing_account(ctx, unit, user))
    if findings:
        yield from findings
        return
    group_text = f" with group {user.group}" if user.group else ""
    yield ok(
        f"the service runs as {user.name} (uid {user.identity.uid}){group_text}",
        user.source,
        evidence=[_row(e) for e in (spec.user, spec.group) if e is not None],
    )


def _root_finding(ctx: Context, unit: EffectiveUnit, user: ServiceUser) -> Finding:
    settings, _reason = _settings(ctx)
    worker_user = None
    if settings is not None and settings.source("user").kind != "default":
        worker_user = settings.get("user")
    evidence = [user.source]
    detail = (
        "gunicorn's master then runs as root: it reads the config file, opens"
        " the log files and binds as root, and any flaw in the app or its"
        " dependencies that reaches the master runs with full control of the"
        " host."
    )
    if worker_user not in (None, 0, "0", "root"):
        evidence.append(settings.describe("user"))
        detail += " gunicorn's user setting switches only the workers, not the master."
    candidate = _suggested_user(ctx, worker_user)
    prefixes = unit.spec.exec_start.prefixes if unit.spec.exec_start else ""
    if "+" in prefixes or "!" in prefixes:
        fix = f"Remove the '{prefixes}' prefix from ExecStart= so that User= applies."
        location = _location(unit.spec.exec_start_entry)
    else:
        fix = (
            f"User={candidate}\nGroup={candidate}\n"
            "(in [Service], then systemctl daemon-reload)"
        )
        location = _anchor(unit)
        if unit.spec.user is not None:
            location = _location(unit.spec.user)
    return warning(
        "gunicorn's master runs as root",
        detail,
        fix=fix,
        evidence=evidence,
        location=location,
    )


def _suggested_user(ctx: Context, worker_user) -> str:
    if isinstance(worker_user, str) and worker_user and not worker_user.isdigit():
        return worker_user
    for name in ("www-data", "nginx", "nobody"):
        if ctx.fs.user(name) is not None:
            return name
    return "gunicorn"


def _dynamic_finding(unit: EffectiveUnit, dynamic: UnitEntry, user: ServiceUser):
    return info(
        f"DynamicUser=yes: systemd runs {unit.name} as the transient user {user.name}",
        f"systemd allocates a uid for {user.name} at each start, so it is not in"
        " /etc/passwd and owns no files. It also implies ProtectSystem=strict:"
        " gunicorn can write only to RuntimeDirectory=, StateDirectory=,"
        " CacheDirectory= and LogsDirectory=, so log files or a PID file"
        " elsewhere cannot be created.",
        fix="Put log files under LogsDirectory= and the PID file or socket under"
        " RuntimeDirectory=, or use a static User=.",
        evidence=[_row(dynamic), *([_row(unit.spec.user)] if unit.spec.user else [])],
        location=_location(dynamic),
    )


def _missing_account(ctx: Context, unit: EffectiveUnit, user: ServiceUser) -> Finding:
    spec = unit.spec
    passwd = ctx.fs.display(ctx.fs.host("/etc/passwd"))
    if user.missing == "group":
        return error(
            f"the group {user.group} (Group=) does not exist",
            f"{user.group} is not in {ctx.fs.display(ctx.fs.host('/etc/group'))}, so"
            " systemd fails the start with status=216/GROUP ('Failed to determine"
            " group credentials: No such process').",
            fix=f"groupadd --system {user.group}, or correct Group=",
            evidence=[_row(spec.group)],
            location=_location(spec.group),
        )
    if user.missing == "specifier":
        return info(
            f"User={user.name} contains a specifier the doctor cannot resolve",
            "Whether the user exists is decided when systemd expands it.",
            evidence=[user.source],
            location=_location(spec.user),
        )
    return error(
        f"the user {user.name} (User=) does not exist",
        f"{user.name} is not in {passwd}, so systemd fails the start with"
        " status=217/USER ('Failed to determine user credentials: No such"
        " process').",
        fix=f"useradd --system --no-create-home --shell /usr/sbin/nologin {user.name},"
        " or correct User=",
        evidence=[_row(spec.user)],
        location=_location(spec.user),
    )


# --- systemd-type -------------------------------------------------------------


@check(
    "systemd-type",
    area="systemd",
    title="Type= fits how gunicorn starts",
    needs=("unit", "settings", "venv_layout"),
)
def systemd_type(ctx: Context):
    """Fail when Type= makes systemd wait for something gunicorn never does.

    ``Type=forking`` waits for the started process to exit, which gunicorn
    does only with ``daemon = True``: otherwise the start hangs until
    TimeoutStartSec= (90 s by default) and systemd kills gunicorn.
    ``Type=notify`` waits for READY=1, which gunicorn sends since 20.0 and
    only from the process systemd started, so older gunicorn, or a shell
    wrapper that does not ``exec`` gunicorn, hangs the same way.
    ``Type=oneshot`` and ``Type=dbus`` never see gunicorn finish starting.
    A daemonizing gunicorn under Type=simple, exec or notify is config-daemon's
    finding; the fix there is in gunicorn's settings, not in Type=.
    """
    unit = ctx.fact("systemd_unit")
    entry = unit.spec.type
    value = entry.value if entry else "simple"
    if value not in SERVICE_TYPES:
        yield warning(
            f"Type={value} is not a service type, so systemd uses Type=simple",
            "systemd logs 'Failed to parse service type, ignoring' and keeps the"
            f" default. Valid types: {', '.join(sorted(SERVICE_TYPES))}.",
            fix="Type=notify  (gunicorn 20.0 and later report readiness), or"
            " Type=simple",
            evidence=[_row(entry)],
            location=_location(entry),
        )
        return
    evidence = [_row(entry) if entry else "Type= not set: simple"]
    location = _location(entry) if entry else _anchor(unit)
    if value == "forking":
        yield _forking_finding(ctx, evidence, location)
    elif value in ("notify", "notify-reload"):
        yield from _notify_findings(ctx, unit, value, evidence, location)
    elif value == "oneshot":
        yield error(
            "Type=oneshot waits for gunicorn to exit, which it never does",
            "systemd keeps the unit in 'activating' while gunicorn serves (oneshot"
            " units have no start timeout by default), and units ordered after it"
            " never start.",
            fix="Type=notify  (or Type=simple)",
            evidence=evidence,
            location=location,
        )
    elif value == "dbus":
        yield error(
            "Type=dbus waits for gunicorn to take a D-Bus name, which it never does",
            "systemd fails the start after TimeoutStartSec= (90 s by default) and"
            " kills gunicorn.",
            fix="Type=notify  (or Type=simple)",
            evidence=evidence,
            location=location,
        )
    else:
        yield _simple_finding(ctx, value, evidence)


def _daemon_mode(ctx: Context) -> tuple[bool | None, str]:
    """Return whether gunicorn daemonizes (None when unknown) and the evidence."""
    settings, reason = _settings(ctx)
    if settings is None:
        return None, reason
    if "daemon" in settings.non_literal:
        expression = settings.non_literal["daemon"]
        return None, f"daemon is set by the expression {expression}"
    return bool(settings.get("daemon")), settings.describe("daemon")


def _forking_finding(ctx: Context, evidence, location) -> Finding:
    daemon, described = _daemon_mode(ctx)
    if daemon is None:
        return skipped(
            f"whether gunicorn daemonizes is unknown ({described}); Type=forking"
            " needs daemon = True"
        )
    if daemon:
        return info(
            "Type=forking matches daemon = True",
            "systemd waits for gunicorn to fork into the background and finds the"
            " master through PIDFile= (pidfile-unit compares it with gunicorn's"
            " pidfile). Type=notify with daemon = False is simpler: systemd then"
            " supervises the master directly and knows when it is ready.",
            fix="Type=notify, and daemon = False in the gunicorn config",
            evidence=[*evidence, described],
            location=location,
        )
    return error(
        "Type=forking, but gunicorn stays in the foreground",
        "With Type=forking systemd waits for the process it started to exit"
        " after forking, but gunicorn without daemon = True never exits, so"
        " the start hangs until TimeoutStartSec= (90 s by default) and systemd"
        " kills gunicorn with 'start operation timed out'.",
        fix="Type=notify  (gunicorn 20.0 and later report readiness), or Type=simple",
        evidence=[*evidence, described],
        location=location,
    )


def _gunicorn_version(ctx: Context) -> tuple[str | None, str]:
    try:
        layout = ctx.fact("venv_layout")
    except FactUnavailable as exc:
        layout, reason = None, exc.reason
    else:
        reason = f"no gunicorn metadata under {layout.path}"
        if layout.gunicorn_version:
            return layout.gunicorn_version, f"installed in {layout.path}"
    settings, _settings_reason = _settings(ctx)
    if settings is not None and settings.gunicorn_version and not settings.estimated:
        return settings.gunicorn_version, "reported by the venv's gunicorn"
    return None, reason


def _release(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _notify_findings(ctx: Context, unit: EffectiveUnit, value, evidence, location):
    findings = []
    version, where = _gunicorn_version(ctx)
    release = _release(version) if version else None
    if release is not None and release < FIRST_NOTIFY_RELEASE:
        findings.append(
            error(
                f"Type={value}, but gunicorn {version} never reports readiness",
                f"systemd waits for READY=1, which gunicorn sends only since 20.0."
                f" gunicorn {version} ({where}) never sends it, so the start hangs"
                " until TimeoutStartSec= (90 s by default) and systemd kills it.",
                fix="Upgrade gunicorn: pip install 'gunicorn>=20', or use Type=simple",
                evidence=[*evidence, f"gunicorn {version} ({where})"],
                location=location,
            )
        )
    wrapper = _shell_wrapper(unit.spec.exec_start)
    notify_access = unit.spec.unit.value("Service", "NotifyAccess")
    if wrapper and (notify_access is None or notify_access.value != "all"):
        findings.append(
            error(
                f"Type={value}, but READY=1 comes from a child of the {wrapper} that"
                " systemd started",
                f"ExecStart= runs {wrapper} -c without 'exec', so gunicorn is a child"
                " of the main process. systemd accepts notifications only from the"
                " main process (NotifyAccess=main), logs 'Got notification message"
                " from PID ..., but reception only permitted for main PID', and"
                " kills the service after TimeoutStartSec=.",
                fix="Start the command with 'exec gunicorn ...' inside the shell,"
                " or set NotifyAccess=all",
                evidence=[*evidence, _row(unit.spec.exec_start_entry)],
                location=_location(unit.spec.exec_start_entry),
            )
        )
    if value == "notify-reload":
        # NOTE: how the reload job ends without RELOADING=1 (time-out or
        # failure) was not tried against a real systemd 253 or later.
        findings.append(
            warning(
                "Type=notify-reload expects RELOADING=1, which gunicorn never sends",
                "On 'systemctl reload' systemd sends SIGHUP and holds the reload"
                " job open until the service sends RELOADING=1 and then READY=1."
                " gunicorn reloads on SIGHUP but sends neither, so systemctl"
                " reload does not return when the reload is done.",
                fix=f"Type=notify and {RELOAD_FIX}",
                evidence=evidence,
                location=location,
            )
        )
    if findings:
        return findings
    if version is None:
        return [
            info(
                f"Type={value} needs gunicorn 20.0 or later; its version is unknown",
                f"The venv's gunicorn version could not be read: {where}.",
                evidence=evidence,
            )
        ]
    return [
        ok(
            f"Type={value}: gunicorn {version} tells systemd when it is ready",
            "systemctl start returns once gunicorn's master has bound its"
            " addresses and started.",
            evidence=[*evidence, f"gunicorn {version} ({where})"],
        )
    ]


def _shell_wrapper(command: ExecCommand | None) -> str | None:
    """Return the shell's name when ExecStart= runs 'sh -c' without exec."""
    if command is None:
        return None
    shell = posixpath.basename(command.path)
    if shell not in SHELLS or "-c" not in command.argv:
        return None
    index = command.argv.index("-c")
    script = command.argv[index + 1] if index + 1 < len(command.argv) else ""
    if script.lstrip().startswith("exec "):
        return None
    return shell


def _simple_finding(ctx: Context, value: str, evidence) -> Finding:
    daemon, described = _daemon_mode(ctx)
    if daemon is not None:
        evidence = [*evidence, described]
    if daemon:
        return ok(
            f"Type={value} is right for gunicorn; its daemon setting is what to change",
            f"{described} makes gunicorn fork into the background, which"
            f" config-daemon reports; the fix is daemon = False, not another Type=.",
            evidence=evidence,
        )
    return ok(
        f"Type={value} fits a gunicorn that stays in the foreground",
        f"With Type={value} systemd counts the service as started once it has"
        " started gunicorn, before gunicorn binds; Type=notify would make"
        " systemctl start wait until the master is ready.",
        evidence=evidence,
    )


# --- systemd-restart ----------------------------------------------------------


@check(
    "systemd-restart",
    area="systemd",
    title="systemd restarts gunicorn when it crashes",
    needs=("unit",),
)
def systemd_restart(ctx: Context):
    """Warn when Restart= leaves a crashed gunicorn down.

    The default is ``Restart=no``: when the master dies (killed by the OOM
    killer, or exiting after 'Worker failed to boot') nothing starts it
    again. ``on-success``, ``on-watchdog`` and ``on-abort`` miss an exit
    with an error status. ``on-failure``, ``on-abnormal`` and ``always``
    restart it. An invalid value is ignored, so the default applies.
    """
    unit = ctx.fact("systemd_unit")
    entry = unit.spec.unit.value("Service", "Restart")
    fix = (
        "Restart=on-failure\nRestartSec=5\n(in [Service], then systemctl daemon-reload)"
    )
    if entry is None:
        yield warning(
            f"{unit.name} sets no Restart=, so a crashed gunicorn stays down",
            "systemd's default is Restart=no: when gunicorn's master dies, nginx"
            " answers 502 until someone starts the service by hand.",
            fix=fix,
            location=_anchor(unit),
        )
        return
    value = entry.value
    evidence = [_row(entry)]
    if value not in RESTART_VALUES:
        yield warning(
            f"Restart={value} is not a valid value, so systemd does not restart gunicorn",
            "systemd logs 'Failed to parse service restart specifier, ignoring'"
            " and keeps the default, Restart=no.",
            fix=fix,
            evidence=evidence,
            location=_location(entry),
        )
        return
    if value == "no":
        yield warning(
            "Restart=no: a crashed gunicorn stays down",
            "When gunicorn's master dies, nginx answers 502 until someone starts"
            " the service by hand.",
            fix=fix,
            evidence=evidence,
            location=_location(entry),
        )
        return
    if value in ("on-success", "on-watchdog", "on-abort"):
        yield warning(
            f"Restart={value} does not restart gunicorn after it fails",
            f"With Restart={value} systemd does not restart a master that exits"
            " with an error status, as gunicorn does after 'Worker failed to"
            " boot' or an unhandled error.",
            fix="Restart=on-failure",
            evidence=evidence,
            location=_location(entry),
        )
        return
    yield ok(
        f"Restart={value}: systemd restarts gunicorn when it dies", evidence=evidence
    )


# --- systemd-reload -----------------------------------------------------------


class KillCommand(NamedTuple):
    """The signal and targets of a kill command line."""

    signal: str
    targets: list[str]


def parse_kill(words: list[str]) -> KillCommand:
    """Read the signal and the targets of ``kill`` arguments (after the program).

    Accepts ``-HUP``, ``-SIGHUP``, ``-1``, ``-s HUP``, ``-n 1`` and
    ``--signal HUP``; without one, kill sends TERM.
    """
    signal = "TERM"
    targets = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("-s", "-n", "--signal") and index + 1 < len(words):
            signal = words[index + 1]
            index += 2
            continue
        if word.startswith("--signal="):
            signal = word.partition("=")[2]
        elif word == "--":
            targets.extend(words[index + 1 :])
            break
        elif word.startswith("-") and len(word) > 1:
            signal = word[1:]
        else:
            targets.append(word)
        index += 1
    return KillCommand(_signal_name(signal), targets)


def _signal_name(signal: str) -> str:
    name = signal.upper().removeprefix("SIG")
    return SIGNAL_NUMBERS.get(name, name)


@check(
    "systemd-reload",
    area="systemd",
    title="ExecReload= sends gunicorn SIGHUP",
    needs=("unit",),
)
def systemd_reload(ctx: Context):
    """Check that ``systemctl reload`` sends SIGHUP to gunicorn's master.

    On SIGHUP gunicorn re-reads its config, starts new workers and stops the
    old ones gracefully, without dropping connections. Without ExecReload=
    ``systemctl reload`` fails ('Job type reload is not applicable') and
    ``reload-or-restart`` restarts instead. Another signal does something
    else (USR2 starts a second master, TERM stops gunicorn). systemd runs no
    shell, so ``$(cat PIDFILE)`` reaches kill as literal text. ``pkill`` and
    ``systemctl kill`` signal every worker too, and a worker dies at once on
    SIGHUP.
    """
    unit = ctx.fact("systemd_unit")
    entries = unit.spec.unit.values("Service", "ExecReload")
    if not entries:
        yield info(
            f"{unit.name} has no ExecReload=, so 'systemctl reload' cannot reload"
            " gunicorn",
            "systemctl reload fails with 'Job type reload is not applicable for"
            " unit', and reload-or-restart restarts gunicorn instead, which"
            " stops serving until the new master has bound.",
            fix=f"{RELOAD_FIX}  (in [Service], then systemctl daemon-reload)",
            location=_anchor(unit),
        )
        return
    findings = []
    for entry in entries:
        findings += _reload_findings(unit, entry)
    if findings:
        yield from findings
        return
    yield ok(
        "ExecReload= sends SIGHUP to gunicorn's master",
        "gunicorn re-reads its configuration and replaces its workers gracefully"
        " (workers-preload reports when preload_app keeps old app code).",
        evidence=[_row(entry) for entry in entries],
    )


def _reload_findings(unit: EffectiveUnit, entry: UnitEntry) -> list[Finding]:
    from doctor.unitfile import parse_exec

    evidence = [_row(entry)]
    location = _location(entry)
    try:
        command = parse_exec(entry.value)
    except ValueError as exc:
        return [
            warning(
                f"systemd rejects ExecReload= on {posixpath.basename(entry.path)}:"
                f"{entry.line}",
                f"{exc}.",
                fix=RELOAD_FIX,
                evidence=evidence,
                location=location,
            )
        ]
    program = posixpath.basename(command.path)
    args = command.argv[1:]
    if program == "kill":
        return _kill_findings(parse_kill(args), evidence, location, shell=False)
    if program in SHELLS and "-c" in args:
        kill = _kill_in_script(args)
        if kill is not None:
            return _kill_findings(kill, evidence, location, shell=True)
    if program in ("pkill", "killall") or (program == "systemctl" and "kill" in args):
        return _broadcast_findings(program, args, evidence, location)
    return [
        info(
            f"ExecReload= runs {command.path}; the doctor cannot tell which signal"
            " it sends",
            "gunicorn reloads on SIGHUP to its master.",
            fix=RELOAD_FIX,
            evidence=evidence,
            location=location,
        )
    ]


def _kill_in_script(args: list[str]) -> KillCommand | None:
    index = args.index("-c")
    script = args[index + 1] if index + 1 < len(args) else ""
    try:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        return None
    for start, word in enumerate(words):
        if posixpath.basename(word) == "kill":
            end = start + 1
            while end < len(words) and words[end] not in (";", "&&", "||", "|", "&"):
                end += 1
            return parse_kill(words[start + 1 : end])
    return None


def _kill_findings(kill: KillCommand, evidence, location, *, shell: bool):
    findings = []
    if kill.signal != "HUP":
        effect = SIGNAL_EFFECTS.get(kill.signal, "is not one gunicorn reloads on")
        findings.append(
            warning(
                f"ExecReload= sends SIG{kill.signal}, not SIGHUP",
                f"SIG{kill.signal} {effect}. gunicorn reloads its configuration"
                " and workers on SIGHUP.",
                fix=RELOAD_FIX,
                evidence=evidence,
                location=location,
            )
        )
    if shell:
        return findings
    shell_words = [i for i, t in enumerate(kill.targets) if "$(" in t or "`" in t]
    if shell_words:
        literal = " ".join(kill.targets[shell_words[0] :])
        findings.append(
            warning(
                "ExecReload= uses shell syntax, but systemd runs no shell",
                f"kill receives {literal!r} as literal text, fails with"
                " 'failed to parse argument', and the reload fails. systemd"
                " provides the master's pid as $MAINPID.",
                fix=RELOAD_FIX,
                evidence=evidence,
                location=location,
            )
        )
    elif not any(t in ("$MAINPID", "${MAINPID}") for t in kill.targets):
        findings.append(
            info(
                f"ExecReload= signals {' '.join(kill.targets) or 'no process'}, not"
                " $MAINPID",
                "systemd passes the pid of gunicorn's master as $MAINPID; another"
                " pid may name a process that is not this service's master.",
                fix=RELOAD_FIX,
                evidence=evidence,
                location=location,
            )
        )
    return findings


def _broadcast_findings(program: str, args: list[str], evidence, location):
    if program == "systemctl":
        whom = "all"
        for index, word in enumerate(args):
            if word.startswith(("--kill-whom=", "--kill-who=")):
                whom = word.partition("=")[2]
            elif word in ("--kill-whom", "--kill-who") and index + 1 < len(args):
                whom = args[index + 1]
        if whom == "main":
            signal = "TERM"
            for index, word in enumerate(args):
                if word in ("-s", "--signal") and index + 1 < len(args):
                    signal = args[index + 1]
                elif word.startswith("--signal="):
                    signal = word.partition("=")[2]
            return _kill_findings(
                KillCommand(_signal_name(signal), ["$MAINPID"]),
                evidence,
                location,
                shell=False,
            )
    return [
        warning(
            f"ExecReload= uses {program}, which signals every gunicorn process",
            f"{program} sends the signal to the workers too. gunicorn's workers"
            " reset SIGHUP to its default action, so each one dies at once,"
            " dropping its requests in flight, while the master reloads.",
            fix=RELOAD_FIX,
            evidence=evidence,
            location=location,
        )
    ]


# --- systemd-killmode ---------------------------------------------------------


@check(
    "systemd-killmode",
    area="systemd",
    title="Stopping the service stops every gunicorn process",
    needs=("unit",),
)
def systemd_killmode(ctx: Context):
    """Warn when KillMode= or KillSignal= lets a stop leave workers or drop requests.

    With the default ``KillMode=control-group`` systemd sends SIGTERM to the
    master and the workers, which all finish their requests and exit, and
    SIGKILLs what is left after TimeoutStopSec=; ``mixed`` is fine too.
    ``process`` signals only the master: when it dies before its workers
    (SIGKILL after TimeoutStopSec=, a crash), the workers stay behind holding
    the listening socket, and the next start fails with 'Connection in use'.
    ``none`` kills nothing at all. ``KillSignal=SIGHUP`` makes gunicorn
    reload instead of stopping, and SIGKILL or another signal skips its
    graceful stop. timeouts-graceful reports SIGINT and SIGQUIT, gunicorn's
    quick shutdown.
    """
    unit = ctx.fact("systemd_unit")
    findings = []
    mode = unit.spec.unit.value("Service", "KillMode")
    if mode is not None and mode.value not in KILL_MODES:
        findings.append(
            info(
                f"KillMode={mode.value} is not valid, so systemd uses control-group",
                "systemd logs 'Failed to parse kill mode, ignoring' and keeps the"
                " default, which suits gunicorn.",
                fix="Remove the KillMode= line",
                evidence=[_row(mode)],
                location=_location(mode),
            )
        )
    elif mode is not None and mode.value in ("process", "none"):
        findings.append(_kill_mode_finding(unit, mode))
    signal_entry = unit.spec.unit.value("Service", "KillSignal")
    if signal_entry is not None and _signal_name(signal_entry.value) not in (
        "TERM",
        "INT",
        "QUIT",
    ):
        name = _signal_name(signal_entry.value)
        effect = SIGNAL_EFFECTS.get(name, "is not a signal gunicorn stops on")
        if name == "HUP":
            effect = (
                "makes gunicorn reload instead of stopping, so systemd SIGKILLs it"
                " after TimeoutStopSec="
            )
        findings.append(
            warning(
                f"KillSignal={signal_entry.value}: systemd stops gunicorn with"
                f" SIG{name}",
                f"SIG{name} {effect}. gunicorn stops gracefully, finishing the"
                " requests in flight, on SIGTERM.",
                fix="Remove the KillSignal= line (the default is SIGTERM)",
                evidence=[_row(signal_entry)],
                location=_location(signal_entry),
            )
        )
    if findings:
        yield from findings
        return
    shown = mode.value if mode else "control-group (the default)"
    yield ok(
        f"KillMode={shown}: a stop reaches the master and every worker",
        "gunicorn stops gracefully on SIGTERM, and systemd SIGKILLs whatever is"
        " left after TimeoutStopSec=.",
        evidence=[_row(mode)] if mode else [],
    )


def _kill_mode_finding(unit: EffectiveUnit, mode: UnitEntry) -> Finding:
    if mode.value == "none":
        detail = (
            "systemd kills no process when the service stops: gunicorn keeps"
            " running outside systemd's control, and the next start fails to bind"
            " with 'Connection in use'. systemd also logs that KillMode=none is"
            " unsafe and deprecated."
        )
    else:
        detail = (
            "systemd signals only gunicorn's master. When the master dies before"
            " its workers (SIGKILL after TimeoutStopSec=, or a crash), the workers"
            " stay behind ('Unit process ... remains running after unit"
            " stopped') holding the listening socket, and the next start fails"
            " with 'Connection in use'."
        )
    return warning(
        f"KillMode={mode.value} can leave gunicorn's workers running after a stop",
        detail,
        fix="Remove the KillMode= line (control-group is the default), or"
        " KillMode=mixed",
        evidence=[_row(mode)],
        location=_location(mode),
    )


# --- systemd-runtime-dir ------------------------------------------------------


@check(
    "systemd-runtime-dir",
    area="systemd",
    title="RuntimeDirectory= and ExecStartPre= create the /run directories",
    needs=("unit", "settings"),
)
def systemd_runtime_dir(ctx: Context):
    """Fail when the unit's way of creating a /run directory does not work.

    RuntimeDirectory= takes names relative to /run: systemd ignores an
    absolute path or one with '..' ('RuntimeDirectory= path is not valid,
    ignoring assignment'), so the directory is never created, although the
    setting looks right. An ExecStartPre= that runs mkdir or install under
    /run, outside the unit's RuntimeDirectory=, runs as User=, who cannot
    write to /run, so the start fails. Whether a socket or PID file under /run has a RuntimeDirectory=
    at all is reported by port-socket-location and pidfile-tmpfs.
    """
    unit = ctx.fact("systemd_unit")
    user = _service_user(ctx, unit)
    findings = []
    valid = []
    for entry in unit.spec.unit.values("Service", "RuntimeDirectory"):
        for word in entry.value.split():
            for name in word.split(":"):
                if not name:
                    continue
                name = expand_specifiers(name, unit.name)
                if _valid_runtime_name(name):
                    valid.append(posixpath.join("/run", name))
                else:
                    findings.append(_invalid_runtime_name(ctx, unit, entry, name))
    for entry in unit.spec.unit.values("Service", "ExecStartPre"):
        finding = _start_pre_finding(ctx, entry, user, valid)
        if finding is not None:
            findings.append(finding)
    if findings:
        yield from findings
        return
    if not valid:
        yield ok(
            f"{unit.name} sets no RuntimeDirectory= and creates nothing under /run"
            " in ExecStartPre=",
            "port-socket-location and pidfile-tmpfs report a socket or PID file"
            " under /run that needs one.",
        )
        return
    preserve = unit.spec.unit.value("Service", "RuntimeDirectoryPreserve")
    if _is_true(preserve):
        lifetime = "RuntimeDirectoryPreserve=yes keeps it after the service stops."
    elif preserve is not None and preserve.value == "restart":
        lifetime = (
            "RuntimeDirectoryPreserve=restart keeps it across restarts, and"
            " systemd removes it when the service stops."
        )
    else:
        lifetime = "systemd removes it again when the service stops."
    yield ok(
        f"systemd creates {', '.join(valid)} at each start, owned by {user.name}",
        lifetime,
        evidence=[
            _row(e) for e in unit.spec.unit.values("Service", "RuntimeDirectory")
        ],
    )


def _valid_runtime_name(name: str) -> bool:
    if name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.rstrip("/").split("/"))


def _gunicorn_paths(ctx: Context) -> list[str]:
    """Return gunicorn's unix socket and PID file paths, where they are known."""
    paths = []
    try:
        plan = ctx.fact("pidfile")
    except FactUnavailable:
        plan = None
    if plan is not None and plan.path:
        paths.append(plan.path)
    try:
        binds = ctx.fact("binds")
    except FactUnavailable:
        binds = None
    if binds is not None:
        paths += [b.path for b in binds.binds if b.kind == "unix" and b.path]
    return paths


def _invalid_runtime_name(ctx: Context, unit, entry: UnitEntry, name: str) -> Finding:
    intended = canonical(posixpath.normpath(posixpath.join("/run", name)))
    relative = intended.removeprefix("/run/") if is_below(intended, "/run") else None
    affected = [
        path for path in _gunicorn_paths(ctx) if is_below(canonical(path), intended)
    ]
    fix = (
        f"RuntimeDirectory={relative}  (a name relative to /run)"
        if relative and relative != "/run"
        else f"RuntimeDirectory={_stem(unit)}  (a name relative to /run)"
    )
    detail = (
        f"RuntimeDirectory= takes names relative to /run; systemd ignores {name!r}"
        " with 'RuntimeDirectory= path is not valid, ignoring assignment' and"
        " creates nothing."
    )
    if affected:
        detail += (
            f" gunicorn needs {intended} for {', '.join(affected)}, so after a"
            " reboot (or a stop, if the directory was made by hand) it cannot"
            " start."
        )
        make = error
    else:
        make = warning
    return make(
        f"systemd ignores RuntimeDirectory={name}: it must be a relative name",
        detail,
        fix=fix,
        evidence=[_row(entry), *affected],
        location=_location(entry),
    )


def _start_pre_finding(
    ctx: Context, entry: UnitEntry, user: ServiceUser, runtime_directories: list[str]
) -> Finding | None:
    from doctor.unitfile import parse_exec

    try:
        command = parse_exec(entry.value)
    except ValueError:
        return None
    program = posixpath.basename(command.path)
    privileged = "+" in command.prefixes or "!" in command.prefixes
    if program not in ("mkdir", "install") or privileged or user.identity is None:
        return None
    if user.identity.is_root:
        return None

    # systemd creates RuntimeDirectory= owned by User= before ExecStartPre=.
    targets = [
        canonical(posixpath.normpath(arg))
        for arg in command.argv[1:]
        if arg.startswith("/")
        and is_below(canonical(posixpath.normpath(arg)), "/run")
        and not any(
            is_below(canonical(posixpath.normpath(arg)), directory)
            for directory in runtime_directories
        )
    ]
    blocked = None
    for target in targets:
        existing = nearest_existing(ctx.fs, target)
        if existing == target:
            continue
        if existing == "/":
            # A tree without /run: on the host it is a tmpfs owned by root.
            blocked = (target, "/run", ["drwxr-xr-x root root /run  (a tmpfs)"])
            break
        verdict = check_path(ctx.fs, existing, user.identity, WRITE | EXECUTE)
        if not verdict.ok:
            blocked = (target, existing, verdict.rows)
            break
    if blocked is None:
        return None

    target, parent, rows = blocked
    name = target.removeprefix("/run/").split("/")[0]
    ignored = "-" in command.prefixes
    consequence = (
        "The '-' prefix makes systemd ignore the failure, so gunicorn then starts"
        " without the directory."
        if ignored
        else "The command fails, so systemd fails the start."
    )
    return (warning if ignored else error)(
        f"ExecStartPre= runs {program} on {target} as {user.name}, who cannot"
        f" write to {parent}",
        f"ExecStartPre= runs as the unit's user {user.name}, who cannot create"
        f" directories in {parent}, so {program} fails with 'Permission denied'."
        f" {consequence}",
        fix=f"RuntimeDirectory={name}  (systemd creates /run/{name} owned by"
        f" {user.name} at each start), and remove this ExecStartPre= line; or"
        " prefix the command with '+' to run it as root",
        evidence=[
            _row(entry),
            f"the service starts as {user.name}: {user.source}",
            f"namei -l {parent}",
            *rows,
        ],
        location=_location(entry),
    )


# --- systemd-environment ------------------------------------------------------


@check(
    "systemd-environment",
    area="systemd",
    title="EnvironmentFile= loads, and secrets stay out of sight",
    needs=("unit",),
)
def systemd_environment(ctx: Context):
    """Fail when an EnvironmentFile= is missing, and report lines systemd misreads.

    systemd (PID 1, as root) reads each EnvironmentFile= before the start; a
    missing file without the '-' prefix fails the start with 'Failed to load
    environment files'. Lines that systemd reads differently from a shell
    (``export NAME=...``, a trailing ``# comment``, an unclosed quote) are
    reported with file and line. A secret-looking variable set with
    Environment= is visible to every local user through ``systemctl show``,
    and one in an EnvironmentFile= readable by others is readable by every
    local user. Titles name variables, never their values.
    """
    unit = ctx.fact("systemd_unit")
    findings = []
    files_read = []
    for path, optional, entry in unit.spec.environment_files:
        result = _environment_file_findings(ctx, unit, path, optional, entry)
        findings += result[0]
        files_read += result[1]
    findings += _inline_secret_findings(ctx, unit)
    if findings:
        yield from findings
        return
    names = sorted(unit.spec.environment)
    summary = ", ".join(names) if names else "nothing"
    yield ok(
        f"the environment loads: Environment= sets {summary}",
        "EnvironmentFile= files read: " + (", ".join(files_read) or "none") + ".",
        evidence=[
            _row(entry) for _path, _optional, entry in unit.spec.environment_files
        ],
    )


def _environment_file_findings(ctx, unit, path, optional, entry):
    from doctor.unitfile import parse_environment_file

    fs = ctx.fs
    location = _location(entry)
    evidence = [_row(entry)]
    if "%" in path:
        path = expand_specifiers(path, unit.name)
        if "%" in path:
            return [
                info(
                    f"EnvironmentFile={entry.value} contains a specifier the doctor"
                    " cannot resolve",
                    evidence=evidence,
                    location=location,
                )
            ], []

    resolved, link_problem = fs.resolve(path)
    host = fs.host(resolved)
    if link_problem or not host.exists():
        what = link_problem or f"{path}: No such file or directory"
        if optional:
            return [], [f"{path} (missing; skipped because of the '-' prefix)"]
        return [
            error(
                f"EnvironmentFile {path} does not exist",
                f"{_capitalized(what)}. systemd fails the start with 'Failed to load"
                " environment files: No such file or directory' (result"
                " 'resources').",
                fix=f"Create {path} (mode 0600, owned by root), or mark it optional:"
                f" EnvironmentFile=-{path}",
                evidence=[*evidence, what],
                location=location,
            )
        ], []

    if not host.is_file():
        if optional:
            return [], [f"{path} (not a file; skipped)"]
        return [
            error(
                f"EnvironmentFile {path} is not a regular file",
                "systemd fails the start with 'Failed to load environment files'.",
                fix=f"Point EnvironmentFile= at a file of NAME=value lines, not {path}",
                evidence=evidence,
                location=location,
            )
        ], []

    try:
        text = host.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [
            skipped(
                f"EnvironmentFile {path} cannot be read by the doctor (uid"
                f" {os.geteuid()}): {exc.strerror}; systemd reads it as root, so"
                " run gunicorn-doctor as root to check it"
            )
        ], []
    values, problems = parse_environment_file(text, path)
    findings = [_environment_problem(problem) for problem in problems]

    secrets = sorted(name for name in values if is_secret_name(name))
    # A user in no group and owning no file gets only the "other" bits.
    anyone = Identity("any local user", -1, frozenset())
    verdict = check_path(fs, path, anyone, READ)
    if secrets and verdict.ok:
        findings.append(
            warning(
                f"EnvironmentFile {path} sets {', '.join(secrets)} and every local"
                " user can read it",
                f"{path} and every directory above it are open to other users."
                " systemd reads the file as root, so nothing but root needs to"
                " read it.",
                fix=f"chown root:root {path} && chmod 0600 {path}",
                evidence=[*evidence, f"namei -l {path}", *verdict.rows],
                location=Location(path),
            )
        )
    return findings, [f"{path} ({len(values)} variables)"]


def _environment_problem(problem: UnitProblem) -> Finding:
    head, _, fix = problem.message.rpartition("; ")
    if not head:
        head, fix = problem.message, ""
    where = f"{posixpath.basename(problem.path)}:{problem.line}"
    comment = _INLINE_COMMENT.match(problem.message)
    if comment:
        title = f"a comment on {where} becomes part of the value of {comment['key']}"
    else:
        title = f"systemd misreads {where}"
    # The line itself is not shown: it contains the value, which may be a secret.
    return warning(
        title,
        f"{_capitalized(head)}.",
        fix=_capitalized(fix) if fix else None,
        location=Location(problem.path, problem.line or None),
    )


def _inline_secret_findings(ctx: Context, unit: EffectiveUnit) -> list[Finding]:
    from doctor.unitfile import parse_environment

    findings = []
    for entry in unit.spec.environment_entries:
        environment, _problems = parse_environment([entry])
        secrets = sorted(name for name in environment if is_secret_name(name))
        if not secrets:
            continue
        names = ", ".join(secrets)
        detail = (
            "'systemctl show -p Environment' prints Environment= values to any"
            " local user."
        )
        try:
            mode = ctx.fs.host(entry.path).stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o004:
            detail += f" {entry.path} itself has mode {mode & 0o777:04o}."
        env_file = f"/etc/{_stem(unit)}/env"
        findings.append(
            warning(
                f"Environment= on {posixpath.basename(entry.path)}:{entry.line} sets"
                f" {names}, which every local user can read",
                detail,
                fix=f"Move {names} to an EnvironmentFile: put the lines in"
                f" {env_file} (chmod 0600, owned by root) and write"
                f" EnvironmentFile={env_file} in place of this line.",
                evidence=[f"{entry.key}= ({_where(entry)}) sets {names}"],
                location=_location(entry),
            )
        )
    return findings
