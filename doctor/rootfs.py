"""Paths and users looked up under a filesystem root.

On a live host the root is ``/``. With ``--root DIR`` (a fixture tree or an
unpacked container image) every absolute path the deployment names, and every
symlink target inside the tree, is looked up under ``DIR``, and users and
groups come from ``DIR/etc/passwd`` and ``DIR/etc/group``.
"""

from __future__ import annotations

import os
import posixpath
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

MAX_SYMLINKS = 40


class UserEntry(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str
    shell: str


class GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


class RootFS:
    def __init__(self, root: Path | str = "/"):
        self.root = Path(root).resolve()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RootFS):
            return NotImplemented
        return self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def is_live(self) -> bool:
        """True when the root is the host's own ``/``."""
        return self.root == Path("/")

    def host(self, path: str | Path) -> Path:
        """Map a path as the deployment sees it to the path on this host."""
        path = str(path)
        if self.is_live:
            return Path(path)
        return self.root / path.lstrip("/")

    def display(self, host_path: Path | str) -> str:
        """Map a host path back to the path the deployment sees."""
        host_path = Path(host_path)
        if self.is_live:
            return str(host_path)
        try:
            return "/" + str(host_path.relative_to(self.root))
        except ValueError:
            return str(host_path)

    def resolve(self, path: str) -> tuple[str, str | None]:
        """Follow symlinks of a deployment path inside the root.

        Returns the resolved deployment path and, when resolution failed, why:
        ``"dangling symlink ... -> ..."``, ``"symlink loop"``. An absolute link
        target is taken relative to the root, as a chroot would.
        """
        parts = [p for p in posixpath.normpath(path).split("/") if p]
        resolved = "/"
        hops = 0
        last_link: tuple[str, str] | None = None
        while parts:
            candidate = posixpath.join(resolved, parts.pop(0))
            host = self.host(candidate)
            if not host.is_symlink():
                resolved = posixpath.normpath(candidate)
                continue
            hops += 1
            if hops > MAX_SYMLINKS:
                return candidate, f"symlink loop at {candidate}"
            target = os.readlink(host)
            last_link = (candidate, target)
            if target.startswith("/"):
                resolved = "/"
            parts = [p for p in target.split("/") if p] + parts
        if last_link and not self.host(resolved).exists():
            link, target = last_link
            return resolved, f"dangling symlink {link} -> {target}"
        return resolved, None

    @cached_property
    def users(self) -> dict[str, UserEntry]:
        return {u.name: u for u in _read_passwd(self.host("/etc/passwd"))}

    @cached_property
    def groups(self) -> dict[str, GroupEntry]:
        return {g.name: g for g in _read_group(self.host("/etc/group"))}

    def user(self, name_or_uid: str | int) -> UserEntry | None:
        """Look a user up by name or numeric id, from the root's passwd file."""
        if isinstance(name_or_uid, int) or str(name_or_uid).isdigit():
            uid = int(name_or_uid)
            return next((u for u in self.users.values() if u.uid == uid), None)
        return self.users.get(str(name_or_uid))

    def group(self, name_or_gid: str | int) -> GroupEntry | None:
        if isinstance(name_or_gid, int) or str(name_or_gid).isdigit():
            gid = int(name_or_gid)
            return next((g for g in self.groups.values() if g.gid == gid), None)
        return self.groups.get(str(name_or_gid))

    def group_ids(self, user: UserEntry) -> set[int]:
        """Return the primary and supplementary group ids of a user."""
        gids = {user.gid}
        gids.update(g.gid for g in self.groups.values() if user.name in g.members)
        return gids


def _read_colon_file(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        rows.append(line.split(":"))
    return rows


def _read_passwd(path: Path) -> list[UserEntry]:
    entries = []
    for fields in _read_colon_file(path):
        if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        entries.append(
            UserEntry(fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6])
        )
    return entries


def _read_group(path: Path) -> list[GroupEntry]:
    entries = []
    for fields in _read_colon_file(path):
        if len(fields) < 4 or not fields[2].isdigit():
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        entries.append(GroupEntry(fields[0], int(fields[2]), members))
    return entries
