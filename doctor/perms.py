"""Permission verdicts for a named user, computed from owners and mode bits.

The doctor often runs as root, for which ``os.access`` returns True for almost
everything, so it cannot answer "can www-data write this?". These functions
answer from the file's owner, group and mode and the user's groups, as the
kernel does for a process without capabilities (ACLs are not read), and walk
a path the way ``namei -l`` prints it, naming the first component that stops
the user.
"""

from __future__ import annotations

import grp
import os
import posixpath
import pwd
import stat
from typing import NamedTuple

from doctor.rootfs import RootFS, UserEntry

READ, WRITE, EXECUTE = 4, 2, 1


class Identity(NamedTuple):
    """A user as the kernel checks it: uid and every group id."""

    name: str
    uid: int
    gids: frozenset[int]

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def identity_for(fs: RootFS, user: str | int) -> Identity | None:
    """Look up a user by name or uid under the root, with all its groups."""
    entry = fs.user(user)
    if entry is None:
        return None
    return Identity(entry.name, entry.uid, frozenset(fs.group_ids(entry)))


def identity_of_entry(fs: RootFS, entry: UserEntry) -> Identity:
    return Identity(entry.name, entry.uid, frozenset(fs.group_ids(entry)))


def allowed(st: os.stat_result, who: Identity, want: int) -> bool:
    """Tell whether ``who`` has every permission bit in ``want`` on ``st``."""
    if who.is_root:
        # Root needs an execute bit somewhere to execute a regular file, but
        # reads, writes and directory search are always allowed.
        if want & EXECUTE and not stat.S_ISDIR(st.st_mode):
            return bool(st.st_mode & 0o111)
        return True
    mode = st.st_mode
    if st.st_uid == who.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in who.gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def owner_name(fs: RootFS, uid: int) -> str:
    entry = fs.user(uid)
    if entry is not None:
        return entry.name
    if fs.is_live:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            pass
    return str(uid)


def group_name(fs: RootFS, gid: int) -> str:
    entry = fs.group(gid)
    if entry is not None:
        return entry.name
    if fs.is_live:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            pass
    return str(gid)


def describe_stat(fs: RootFS, path: str, st: os.stat_result) -> str:
    """Render one ``namei -l`` style row: mode, owner, group, path."""
    return (
        f"{stat.filemode(st.st_mode)} {owner_name(fs, st.st_uid)}"
        f" {group_name(fs, st.st_gid)} {path}"
    )


class PathVerdict(NamedTuple):
    """Whether a user can reach and use a path, with the evidence."""

    ok: bool
    path: str
    rows: list[str]
    blocking: str | None = None
    reason: str | None = None
    missing: str | None = None

    def explain(self, who: Identity) -> str:
        if self.ok:
            return f"{who.name} can use {self.path}"
        if self.missing:
            return f"{self.missing} does not exist"
        return f"{who.name} cannot {self.reason} {self.blocking}"


def check_path(fs: RootFS, path: str, who: Identity, want: int) -> PathVerdict:
    """Walk ``path`` from ``/`` and check search permission on each directory,
    then ``want`` on the last component.

    Symlinks are followed inside the root. The first directory without
    search permission, or the last component without ``want``, is named as
    ``blocking``.
    """
    resolved, problem = fs.resolve(path)
    rows: list[str] = []
    parts = [p for p in resolved.split("/") if p]
    current = "/"
    components = ["/"] + [
        posixpath.join("/", *parts[: index + 1]) for index in range(len(parts))
    ]
    for index, component in enumerate(components):
        current = component
        try:
            st = os.stat(fs.host(component))
        except FileNotFoundError:
            return PathVerdict(False, path, rows, missing=current)
        except OSError as exc:
            return PathVerdict(
                False, path, rows, blocking=current, reason=f"stat ({exc.strerror})"
            )
        rows.append(describe_stat(fs, component, st))
        last = index == len(components) - 1
        if not last:
            if not allowed(st, who, EXECUTE):
                return PathVerdict(
                    False,
                    path,
                    rows,
                    blocking=current,
                    reason="search (x) the directory",
                )
            continue
        if not allowed(st, who, want):
            return PathVerdict(
                False, path, rows, blocking=current, reason=_describe_want(want)
            )
    if problem:
        return PathVerdict(False, path, rows, missing=problem)
    return PathVerdict(True, path, rows)


def _describe_want(want: int) -> str:
    names = []
    if want & READ:
        names.append("read")
    if want & WRITE:
        names.append("write")
    if want & EXECUTE:
        names.append("execute/search")
    return " and ".join(names)


def nearest_existing(fs: RootFS, path: str) -> str:
    """Return ``path`` or its nearest existing ancestor."""
    current = posixpath.normpath(path)
    while current != "/" and not fs.host(current).exists():
        current = posixpath.dirname(current)
    return current
