"""The systemd unit of the target, as parsed during discovery."""

from __future__ import annotations

from doctor.context import Context, FactUnavailable, fact


@fact("unit")
def unit(ctx: Context):
    if ctx.target.service is None:
        raise FactUnavailable(
            "no systemd unit was found for this deployment; name it with --unit"
        )
    return ctx.target.service
