"""The PID file gunicorn writes: its path, its writer, its content, its directory.

gunicorn 20.0 to 27.0 handle the file in ``gunicorn/pidfile.py`` and
``Arbiter.start()``. The master writes it at start, before it binds, and
writes it as the user the master runs as: ``set_owner_process()`` switches
only the workers to gunicorn's ``user`` and ``group`` settings. Under systemd
that user is the unit's ``User=``. The master writes a temporary file in the
PID file's directory and renames it over the PID file, then removes the file
on a clean stop if it still contains its own pid.
"""

from __future__ import annotations

import glob
import os
import posixpath
import pwd
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from doctor.context import Context, FactUnavailable, fact
from doctor.findings import Location
from doctor.perms import Identity, describe_stat, identity_for
from doctor.rootfs import RootFS

if TYPE_CHECKING:
    from doctor.unitfile import ServiceSpec, UnitEntry

# Filesystems whose content is gone after a reboot.
VOLATILE_FSTYPES = frozenset({"tmpfs", "ramfs"})
# Under --root the mounts of the system that runs the tree are unknown. These
# directories are tmpfs mounts on every systemd host.
ASSUMED_TMPFS = ("/run", "/dev/shm")
# /var/run and /var/lock are symlinks to /run and /run/lock on systemd hosts.
# A tree may lack the links, so the names are mapped instead of followed.
LEGACY_PREFIXES = (("/var/run", "/run"), ("/var/lock", "/run/lock"))
# systemd-tmpfiles reads *.conf from these directories, in this order of
# precedence: a file in an earlier directory replaces the file of the same
# name in the later ones (tmpfiles.d(5)).
TMPFILES_DIRS = (
    "/etc/tmpfiles.d",
    "/run/tmpfiles.d",
    "/usr/local/lib/tmpfiles.d",
    "/usr/lib/tmpfiles.d",
    "/lib/tmpfiles.d",
)
# tmpfiles.d(5) line types that create a directory (or a btrfs subvolume).
DIRECTORY_TYPES = frozenset("dDvqQ")
# A PID file is a few bytes, so a longer file is garbage and is not read whole.
MAX_PID_FILE_BYTES = 4096
# Linux pids fit in a C int, and os.kill() raises OverflowError above this.
MAX_PID = 2**31 - 1


class Writer(NamedTuple):
    """The user the master has when it writes the PID file, and why that user."""

    name: str
    group: str | None
    identity: Identity | None
    source: str


class PidFileState(NamedTuple):
    """What is at the PID file's path now.

    ``kind`` is ``missing``, ``file``, ``directory``, ``other`` (a socket,
    FIFO or device), ``dangling`` (a symlink to nothing) or ``unknown`` (stat
    failed). ``pid`` is set only when the content is one positive number, as
    gunicorn parses it with ``int()``. Otherwise ``content_problem`` is the
    reason.
    """

    path: str
    kind: str
    stat_row: str | None = None
    owner_uid: int | None = None
    link: str | None = None
    text: str | None = None
    read_error: str | None = None
    pid: int | None = None
    content_problem: str | None = None


class TmpfilesEntry(NamedTuple):
    """One line of a tmpfiles.d file that creates a directory."""

    path: str
    line: int
    type: str
    target: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


class Mount(NamedTuple):
    point: str
    source: str
    fstype: str

    def row(self) -> str:
        """Render the mount like a ``findmnt`` row: target, source, type."""
        return f"{self.point} {self.source} {self.fstype}"


class Volatility(NamedTuple):
    """Whether a directory is on a filesystem that a reboot empties."""

    volatile: bool
    mount_point: str | None
    fstype: str | None
    evidence: list[str]
    assumed: bool


@dataclass
class PidFilePlan:
    """The effective ``pidfile`` setting and everything the pidfile checks share.

    ``path`` and ``directory`` are absolute deployment paths, or None when
    gunicorn writes no PID file. ``unit_pid_file`` is the unit's ``PIDFile=``
    made absolute the way systemd does.
    """

    setting: str | None
    described: str
    location: Location | None
    path: str | None
    directory: str | None
    relative_to: str | None
    writer: Writer
    unit: ServiceSpec | None
    unit_name: str | None
    unit_pid_file: str | None
    runtime_directories: list[tuple[str, UnitEntry]] = field(default_factory=list)
    state: PidFileState | None = None

    def restart_command(self) -> str:
        if self.unit_name:
            return f"systemctl restart {self.unit_name}"
        return "restart gunicorn"


def canonical(path: str) -> str:
    """Normalize a path and map /var/run and /var/lock to /run and /run/lock."""
    path = posixpath.normpath(path)
    for legacy, current in LEGACY_PREFIXES:
        if path == legacy or path.startswith(legacy + "/"):
            return current + path[len(legacy) :]
    return path


def is_below(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def expand_specifiers(value: str, unit_name: str | None) -> str:
    """Expand the systemd specifiers a path setting commonly uses.

    Covers %t, %T, %V and %% for system services and tmpfiles.d, and %n, %N,
    %p and %i when a unit name is given. Any other specifier is left as
    written.
    """
    table = {"t": "/run", "T": "/tmp", "V": "/var/tmp", "%": "%"}
    if unit_name:
        stem = unit_name.rsplit(".", 1)[0]
        prefix, _, instance = stem.partition("@")
        table.update(n=unit_name, N=stem, p=prefix, i=instance)
    return re.sub(
        r"%(.)", lambda match: table.get(match.group(1), match.group(0)), value
    )


@fact("pidfile")
def pidfile(ctx: Context) -> PidFilePlan:
    """Gather the PID file's path, writer, content and the unit's view of it."""
    settings = ctx.fact("settings")
    if settings.error:
        raise FactUnavailable(
            "gunicorn did not finish loading the configuration, so its pidfile"
            " setting is unknown"
        )
    if "pidfile" in settings.non_literal:
        raise FactUnavailable(
            f"pidfile is set by the expression {settings.non_literal['pidfile']},"
            " which the static reader does not evaluate"
        )
    value = settings.get("pidfile")
    if value is not None and not isinstance(value, str):
        raise FactUnavailable(f"pidfile = {value!r} is not a path")
    unit = ctx.target.service
    unit_name = posixpath.basename(ctx.target.unit.value) if ctx.target.unit else None
    location = settings.location("pidfile")
    from_command_line = settings.source("pidfile").kind == "cli"
    if location is None and from_command_line and unit is not None:
        entry = unit.exec_start_entry
        if entry is not None:
            location = Location(entry.path, entry.line)
    plan = PidFilePlan(
        # NOTE: gunicorn treats pidfile = "" as a request for a temporary file
        # with a random name; the checks treat it as no PID file.
        setting=value or None,
        described=settings.describe("pidfile"),
        location=location,
        path=None,
        directory=None,
        relative_to=None,
        writer=_writer(ctx),
        unit=unit,
        unit_name=unit_name,
        unit_pid_file=_unit_pid_file(unit, unit_name),
        runtime_directories=_runtime_directories(unit, unit_name),
    )
    if plan.setting:
        plan.path, plan.relative_to = _absolute(ctx, plan.setting)
        plan.directory = posixpath.dirname(plan.path)
        plan.state = read_state(ctx.fs, plan.path)
    return plan


def _absolute(ctx: Context, setting: str) -> tuple[str, str | None]:
    """Return the absolute path, and the directory a relative one is resolved in.

    gunicorn changes to its ``chdir`` setting before the arbiter starts, so a
    relative pidfile is relative to that directory.
    """
    if setting.startswith("/"):
        return posixpath.normpath(setting), None
    settings = ctx.fact("settings")
    base = None
    if settings.source("chdir").kind != "default":
        base = settings.get("chdir")
    if not base and ctx.target.chdir is not None:
        base = ctx.target.chdir.value
    base = base or "/"
    return posixpath.normpath(posixpath.join(base, setting)), base


def _writer(ctx: Context) -> Writer:
    target = ctx.target
    fs = ctx.fs
    unit = target.service
    if unit is not None and unit.user is not None:
        name = unit.user.value
        source = f"User= in {unit.user.path}:{unit.user.line}"
    elif unit is not None:
        name = "root"
        source = (
            f"{target.unit.value} sets no User=, so systemd starts gunicorn as root"
        )
    elif target.user is not None:
        name, source = target.user.value, target.user.source
    elif fs.is_live:
        try:
            name = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            name = str(os.geteuid())
        source = (
            "no unit or running master names the user; assumed to be the user"
            " running the doctor"
        )
    else:
        name = "root"
        source = "no unit names the user; assumed to be root"
    identity = identity_for(fs, name)
    group = None
    if unit is not None and unit.group is not None:
        group = unit.group.value
    else:
        entry = fs.user(name)
        if entry is not None:
            group_entry = fs.group(entry.gid)
            group = group_entry.name if group_entry else str(entry.gid)
    display = identity.name if identity is not None else name
    return Writer(display, group, identity, source)


def _unit_pid_file(unit: ServiceSpec | None, unit_name: str | None) -> str | None:
    if unit is None or unit.pid_file is None:
        return None
    value = expand_specifiers(unit.pid_file.value, unit_name)
    # systemd.service(5): a relative PIDFile= is prefixed with /run/.
    if not value.startswith("/"):
        value = posixpath.join("/run", value)
    return posixpath.normpath(value)


def _runtime_directories(
    unit: ServiceSpec | None, unit_name: str | None
) -> list[tuple[str, UnitEntry]]:
    """Return the directories ``RuntimeDirectory=`` creates below /run."""
    if unit is None:
        return []
    found = []
    for entry in unit.unit.values("Service", "RuntimeDirectory"):
        for word in expand_specifiers(entry.value, unit_name).split():
            # NOTE: a word NAME:LINK is taken to also create the symlink
            # /run/LINK, as recent systemd.exec(5) describes; not checked
            # against a systemd release.
            for name in word.split(":"):
                if name:
                    found.append((posixpath.join("/run", name.strip("/")), entry))
    return found


def broken_link(fs: RootFS, path: str) -> str | None:
    """Return why a symlink on ``path`` leads nowhere, or None.

    Only symlinks whose target is missing or that loop count. A plain missing
    component below a working symlink, such as /var/run/app when /var/run
    links to /run, is not a broken link.
    """
    current = "/"
    for part in [p for p in posixpath.normpath(path).split("/") if p]:
        candidate = posixpath.join(current, part)
        if fs.host(candidate).is_symlink():
            resolved, problem = fs.resolve(candidate)
            if problem:
                return problem
            current = resolved
        else:
            current = candidate
        if not fs.host(current).exists():
            return None
    return None


def read_state(fs: RootFS, path: str) -> PidFileState:
    """Stat and read the file at ``path`` and parse it as gunicorn would."""
    # The parent is resolved first: under --root an absolute symlink on the
    # way, such as /var/run -> /run, must not be followed on this host.
    parent = fs.resolve(posixpath.dirname(path))[0]
    own_host = fs.host(posixpath.join(parent, posixpath.basename(path)))
    link = None
    if own_host.is_symlink():
        link = f"{path} -> {os.readlink(own_host)}"
        problem = broken_link(fs, path)
        if problem:
            return PidFileState(path, "dangling", link=problem)

    resolved = fs.resolve(path)[0]
    try:
        st = os.stat(fs.host(resolved))
    except FileNotFoundError:
        return PidFileState(path, "missing", link=link)
    except OSError as exc:
        return PidFileState(path, "unknown", link=link, read_error=exc.strerror)
    row = describe_stat(fs, path, st)
    if stat.S_ISDIR(st.st_mode):
        return PidFileState(path, "directory", row, st.st_uid, link)
    if not stat.S_ISREG(st.st_mode):
        return PidFileState(path, "other", row, st.st_uid, link)

    try:
        with open(fs.host(resolved), "rb") as handle:
            data = handle.read(MAX_PID_FILE_BYTES + 1)
    except OSError as exc:
        return PidFileState(path, "file", row, st.st_uid, link, read_error=exc.strerror)
    text = data.decode("utf-8", "replace")
    pid, content_problem = parse_pid(text, len(data) > MAX_PID_FILE_BYTES)
    return PidFileState(
        path, "file", row, st.st_uid, link, text, None, pid, content_problem
    )


def parse_pid(text: str, truncated: bool = False) -> tuple[int | None, str | None]:
    """Parse PID file text with ``int()``, as gunicorn's ``Pidfile.validate()`` does.

    ``int()`` also accepts surrounding whitespace, a sign and underscores
    between digits, so "42\\n" is the pid 42.
    """
    if truncated:
        return None, f"it is longer than {MAX_PID_FILE_BYTES} bytes"
    if not text.strip():
        return None, "it is empty"
    try:
        value = int(text)
    except ValueError:
        return None, "it is not a number"
    if value <= 0:
        return None, f"{value} is not a process id"
    if value > MAX_PID:
        return None, f"{value} is larger than any process id"
    return value, None


def read_tmpfiles(fs: RootFS) -> list[TmpfilesEntry]:
    """Return the tmpfiles.d lines under the root that create a directory.

    A file masks the file of the same name in every directory of lower
    precedence. An empty file or a symlink to /dev/null masks it without
    adding lines.
    """
    chosen: dict[str, str] = {}
    for directory in TMPFILES_DIRS:
        for host_path in sorted(glob.glob(str(fs.host(directory) / "*.conf"))):
            name = posixpath.basename(host_path)
            chosen.setdefault(name, posixpath.join(directory, name))
    entries = []
    for name in sorted(chosen):
        path = chosen[name]
        host = fs.host(path)
        if host.is_symlink() and os.readlink(host) == "/dev/null":
            continue
        try:
            text = Path(host).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        entries.extend(_parse_tmpfiles(text, path))
    return entries


def _parse_tmpfiles(text: str, path: str) -> list[TmpfilesEntry]:
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[0] or fields[0][0] not in DIRECTORY_TYPES:
            continue
        # For system tmpfiles.d, %t is /run and %% is a literal %.
        target = expand_specifiers(fields[1], None)
        entries.append(TmpfilesEntry(path, number, fields[0], target, line))
    return entries


class Creator(NamedTuple):
    """The creator of a directory: RuntimeDirectory= at start, or tmpfiles.d at boot."""

    kind: str
    path: str
    evidence: str
    at_boot: bool


def find_creator(fs: RootFS, plan: PidFilePlan, directory: str) -> Creator | None:
    """Return what creates ``directory`` without anyone running mkdir, if anything."""
    candidates = {canonical(directory), canonical(fs.resolve(directory)[0])}
    for path, entry in plan.runtime_directories:
        if canonical(path) in candidates:
            return Creator(
                "RuntimeDirectory=",
                entry.path,
                f"RuntimeDirectory={entry.value} ({entry.path}:{entry.line})",
                at_boot=False,
            )
    for entry in read_tmpfiles(fs):
        if canonical(entry.target) in candidates:
            return Creator(
                "tmpfiles.d", entry.path, f"{entry.where}: {entry.text}", at_boot=True
            )
    return None


def read_mounts(path: str = "/proc/self/mounts") -> list[Mount]:
    """Return the mount table, with the octal escapes of mount points decoded."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FactUnavailable(f"{path} cannot be read: {exc.strerror}") from None
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        mounts.append(Mount(point, fields[0], fields[2]))
    return mounts


def volatility(fs: RootFS, directory: str) -> Volatility:
    """Tell whether ``directory`` is on a tmpfs, from the mount table when live."""
    if not fs.is_live:
        path = canonical(directory)
        for point in ASSUMED_TMPFS:
            if is_below(path, point):
                return Volatility(
                    True,
                    point,
                    "tmpfs",
                    [
                        (
                            f"{point} is assumed to be a tmpfs, as on every systemd"
                            " host: the mounts of the system that runs the tree"
                            " under --root are unknown"
                        )
                    ],
                    assumed=True,
                )
        return Volatility(False, None, None, [], assumed=True)
    resolved, _problem = fs.resolve(directory)
    best: Mount | None = None
    for mount in read_mounts():
        # Later lines are mounted on top of earlier ones at the same point.
        longer = best is None or len(mount.point) >= len(best.point)
        if longer and is_below(resolved, mount.point):
            best = mount
    if best is None:
        return Volatility(False, None, None, [], assumed=False)
    return Volatility(
        best.fstype in VOLATILE_FSTYPES,
        best.point,
        best.fstype,
        [f"findmnt --target {resolved}: {best.row()}"],
        assumed=False,
    )
