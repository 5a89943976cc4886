"""Run checks concurrently, each with a time limit, and collect their findings.

A check that raises becomes an ``error`` finding about the doctor itself,
and one that overruns its time limit becomes an ``error`` finding too; the
other checks still run. A check that needs a fact nobody could provide
reports ``skipped`` with the reason.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass

from doctor.context import Context, FactUnavailable
from doctor.findings import Finding, Severity
from doctor.registry import CheckSpec

DEFAULT_CHECK_TIMEOUT = 60.0
MAX_PARALLEL_CHECKS = 8


@dataclass
class _Outcome:
    findings: list[Finding] | None = None
    started: float | None = None
    finished: float | None = None
    # Whether the check's thread occupies one of the run's slots. A check that
    # overruns its limit gives its slot up, so that the checks queued behind
    # it start while it is still stuck.
    holds_slot: bool = False


def run_checks(
    ctx: Context,
    specs: Iterable[CheckSpec],
    *,
    timeout: float = DEFAULT_CHECK_TIMEOUT,
) -> list[Finding]:
    """Run ``specs`` against ``ctx`` and return all findings in check order."""
    specs = list(specs)
    outcomes = [_Outcome() for _ in specs]
    slots = _Slots(MAX_PARALLEL_CHECKS)
    threads = []
    for spec, outcome in zip(specs, outcomes, strict=True):
        # Daemon threads: a check stuck past its time limit must not keep the
        # doctor alive at exit.
        thread = threading.Thread(
            target=_run_one,
            args=(ctx, spec, outcome, slots),
            name=f"check-{spec.id}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)

    findings: list[Finding] = []
    for spec, outcome, thread in zip(specs, outcomes, threads, strict=True):
        _join(thread, outcome, timeout)
        if outcome.findings is None:
            slots.give_up(outcome)
            findings.append(_timeout_finding(spec, timeout))
        else:
            findings.extend(outcome.findings)
    return findings


def _join(thread: threading.Thread, outcome: _Outcome, timeout: float) -> None:
    """Wait for a check until ``timeout`` seconds after it started running."""
    while thread.is_alive():
        if outcome.started is None:
            thread.join(0.05)
            continue
        remaining = outcome.started + timeout - time.monotonic()
        if remaining <= 0:
            return
        thread.join(remaining)


class _Slots:
    """At most ``size`` checks running at once, minus those given up."""

    def __init__(self, size: int):
        self._free = threading.Semaphore(size)
        self._lock = threading.Lock()

    def take(self, outcome: _Outcome) -> None:
        self._free.acquire()
        with self._lock:
            outcome.holds_slot = True
            outcome.started = time.monotonic()

    def give_up(self, outcome: _Outcome) -> None:
        """Free the slot of ``outcome``, if its check still occupies one."""
        with self._lock:
            if not outcome.holds_slot:
                return
            outcome.holds_slot = False
        self._free.release()


def _run_one(ctx: Context, spec: CheckSpec, outcome: _Outcome, slots: _Slots) -> None:
    slots.take(outcome)
    try:
        findings = _collect(ctx, spec)
    finally:
        slots.give_up(outcome)
    outcome.finished = time.monotonic()
    duration = round(outcome.finished - outcome.started, 4)
    for finding in findings:
        finding.check = finding.check or spec.id
        finding.area = finding.area or spec.area
        finding.duration = duration
    outcome.findings = findings


def _collect(ctx: Context, spec: CheckSpec) -> list[Finding]:
    if ctx.static and (spec.live or spec.executes):
        what = "looks at the live host" if spec.live else "runs the target's code"
        return [_skip(spec, f"static mode: this check {what}")]
    try:
        findings = list(spec(ctx) or [])
    except FactUnavailable as exc:
        return [_skip(spec, exc.reason)]
    except Exception as exc:  # noqa: BLE001 - one broken check must not stop the run
        return [_crash_finding(spec, exc, ctx.options.verbose)]
    if not findings:
        return [
            _crash_finding(
                spec, RuntimeError("the check returned no finding"), ctx.options.verbose
            )
        ]
    return findings


def _skip(spec: CheckSpec, reason: str) -> Finding:
    return Finding(
        check=spec.id,
        area=spec.area,
        severity=Severity.SKIPPED,
        title=f"{spec.title}: skipped",
        detail=reason,
    )


def _crash_finding(spec: CheckSpec, exc: BaseException, verbose: bool) -> Finding:
    evidence = [f"{type(exc).__name__}: {exc}"]
    if verbose:
        evidence += traceback.format_exception(exc)
    return Finding(
        check=spec.id,
        area="doctor",
        severity=Severity.ERROR,
        title=f"check {spec.id} crashed inside the doctor",
        detail=(
            f"The check {spec.id} ({spec.source}) raised {type(exc).__name__}; "
            "its verdict is unknown. The other checks still ran."
        ),
        fix="Rerun with -v for the traceback and report it to the check's authors.",
        evidence=evidence,
    )


def _timeout_finding(spec: CheckSpec, timeout: float) -> Finding:
    return Finding(
        check=spec.id,
        area="doctor",
        severity=Severity.ERROR,
        title=f"check {spec.id} did not finish within {timeout:g} s",
        detail=(
            f"The check {spec.id} was still running after {timeout:g} s and was"
            " abandoned; its verdict is unknown."
        ),
        fix="Raise the limit with --check-timeout, or run it alone with --select.",
    )
