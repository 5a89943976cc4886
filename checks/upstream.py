"""The 502 verdict as part of ``check``: the same diagnosis ``triage`` prints."""

from __future__ import annotations

from doctor import Context, FactUnavailable, check, error, ok, warning


@check(
    "upstream-502",
    area="upstream",
    title="No cause of 502 responses is in evidence",
    needs=("triage",),
)
def upstream_502(ctx: Context):
    """Fail when the evidence points at a cause of 502 Bad Gateway.

    Runs the same diagnosis as ``gunicorn-doctor triage``: it probes each
    bind with one request, reads nginx's, gunicorn's and the kernel's logs
    within the window, looks at the running processes and compares nginx's
    configuration with gunicorn's binds, then ranks the candidate causes by
    their evidence. The finding carries the winner; ``triage`` also lists the
    causes it ruled out and why. 504s from nginx's own read timeout are
    reported as a warning, since they are not 502s.
    """
    if ctx.static:
        raise FactUnavailable("static mode sends no request and reads no log")
    result = ctx.fact("triage")
    if result.winner is not None:
        winner = result.winner
        yield error(
            winner.verdict or winner.title,
            "This is the cause with the most evidence; gunicorn-doctor triage"
            " shows the other candidates and why they were ruled out.",
            fix=winner.fix,
            evidence=winner.evidence,
        )
    for other in result.others:
        if other.status == 504:
            yield warning(
                other.verdict or other.title,
                "nginx answers 504 Gateway Timeout for these, not 502.",
                fix=other.fix,
                evidence=other.evidence,
            )
    if result.winner is None:
        if not result.observed:
            raise FactUnavailable(
                "no request could be sent and no log read: "
                + "; ".join(result.unavailable)
            )
        yield ok(
            "no cause of 502 responses is in evidence",
            "Examined: "
            + "; ".join(result.examined)
            + "."
            + (
                " Not examined: " + "; ".join(result.unavailable)
                if result.unavailable
                else ""
            ),
        )
