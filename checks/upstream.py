"""The 502 verdict as part of ``check``: the same diagnosis ``triage`` prints."""

from __future__ import annotations

from doctor import Context, FactUnavailable, check, error, ok, warning

# The response the client gets, by status, for causes that give no 502.
NOT_502 = {
    500: "The client receives 500 Internal Server Error from gunicorn for these,"
    " which nginx passes on, not 502.",
    504: "nginx answers 504 Gateway Timeout for these, not 502.",
}


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
    causes it ruled out and why. Causes that give other statuses (504 from
    nginx's read timeout, 500 from the app or from a request that gunicorn's
    timeout aborted) are reported as warnings, since they are not 502s.
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
        if other.status != 502:
            yield warning(
                other.verdict or other.title,
                NOT_502.get(other.status, f"These responses are {other.status}s."),
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
