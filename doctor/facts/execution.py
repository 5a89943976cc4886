"""The user and environment the doctor runs the target's code with."""

from __future__ import annotations

import os
from typing import NamedTuple

from doctor.context import Context


class RunAs(NamedTuple):
    uid: int | None
    gid: int | None
    description: str


def service_identity(ctx: Context) -> RunAs:
    """Return the user to run probes as: the service's ``User=`` when root.

    Only a root doctor on the live host can switch users; otherwise probes run
    as the doctor's own user, and the description states that.
    """
    target = ctx.target
    if target.user is None:
        return RunAs(None, None, "the doctor's own user")
    if not ctx.fs.is_live:
        return RunAs(
            None, None, "the doctor's own user (users of --root are not switched to)"
        )
    user = ctx.fs.user(target.user.value)
    if user is None:
        return RunAs(
            None, None, f"the doctor's own user ({target.user.value} does not exist)"
        )
    if os.geteuid() != 0:
        if os.geteuid() == user.uid:
            return RunAs(None, None, f"{user.name}")
        return RunAs(
            None, None, f"the doctor's own user (run as root to switch to {user.name})"
        )
    gid = user.gid
    if target.group is not None:
        group = ctx.fs.group(target.group.value)
        if group is not None:
            gid = group.gid
    return RunAs(user.uid, gid, user.name)


def probe_environment(
    ctx: Context, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Return the environment the service's gunicorn starts with."""
    target = ctx.target
    environment = dict(target.environment) if target.environment else dict(os.environ)
    environment.update(extra or {})
    return environment
