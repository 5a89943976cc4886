"""The runner: concurrency, time limits, crashes and skipped checks."""

import time

from doctor import Context, FactUnavailable, Severity, check, ok
from doctor.context import Options
from doctor.findings import Finding, exit_code_for
from doctor.rootfs import RootFS
from doctor.runner import MAX_PARALLEL_CHECKS, run_checks
from doctor.target import Sourced, Target


def make_context(tmp_path, **options) -> Context:
    target = Target(fs=RootFS("/"), chdir=Sourced(str(tmp_path), "test"))
    return Context(target, Options(**options))


@check("t-ok", area="config", title="passes")
def passing(ctx):
    yield ok("all good")


@check("t-crash", area="config", title="crashes")
def crashing(ctx):
    raise ZeroDivisionError("boom")
    yield  # pragma: no cover


@check("t-slow", area="config", title="hangs")
def slow(ctx):
    time.sleep(5)
    yield ok("late")


@check("t-needs", area="venv", title="needs a missing fact")
def needs_missing(ctx):
    raise FactUnavailable("no venv here")
    yield  # pragma: no cover


@check("t-empty", area="config", title="yields nothing")
def empty(ctx):
    return []


@check("t-live", area="port", title="looks at sockets", live=True)
def live(ctx):
    yield ok("looked")


def test_results_keep_check_order(tmp_path):
    findings = run_checks(make_context(tmp_path), [passing, needs_missing])
    assert [f.check for f in findings] == ["t-ok", "t-needs"]


def test_runner_stamps_id_area_duration(tmp_path):
    (finding,) = run_checks(make_context(tmp_path), [passing])
    assert finding.check == "t-ok"
    assert finding.area == "config"
    assert finding.duration is not None


def test_crash_becomes_doctor_error(tmp_path):
    findings = run_checks(make_context(tmp_path), [crashing, passing])
    crash = findings[0]
    assert crash.severity is Severity.ERROR
    assert crash.area == "doctor"
    assert "ZeroDivisionError: boom" in crash.evidence[0]
    assert findings[1].severity is Severity.OK


def test_crash_traceback_only_when_verbose(tmp_path):
    quiet = run_checks(make_context(tmp_path), [crashing])[0]
    loud = run_checks(make_context(tmp_path, verbose=True), [crashing])[0]
    assert not any("Traceback" in line for line in quiet.evidence)
    assert any("Traceback" in line for line in loud.evidence)


def test_timeout_abandons_check_and_others_finish(tmp_path):
    started = time.monotonic()
    findings = run_checks(make_context(tmp_path), [slow, passing], timeout=0.5)
    assert time.monotonic() - started < 4
    assert findings[0].severity is Severity.ERROR
    assert "did not finish within 0.5 s" in findings[0].title
    assert findings[1].severity is Severity.OK


def test_missing_fact_is_skipped_with_reason(tmp_path):
    (finding,) = run_checks(make_context(tmp_path), [needs_missing])
    assert finding.severity is Severity.SKIPPED
    assert finding.detail == "no venv here"


def test_check_without_findings_is_an_error(tmp_path):
    (finding,) = run_checks(make_context(tmp_path), [empty])
    assert finding.severity is Severity.ERROR
    assert finding.area == "doctor"


def test_static_mode_skips_live_checks(tmp_path):
    (finding,) = run_checks(make_context(tmp_path, static=True), [live])
    assert finding.severity is Severity.SKIPPED
    assert "static mode" in finding.detail


def test_exit_code_follows_fail_level():
    warn = Finding("x", "config", Severity.WARNING, "w")
    skip = Finding("y", "config", Severity.SKIPPED, "s")
    assert exit_code_for([warn], Severity.ERROR) == 0
    assert exit_code_for([warn], Severity.WARNING) == 1
    assert exit_code_for([skip], Severity.INFO) == 0


def test_overrunning_checks_free_their_slots(tmp_path):
    """Checks queued behind overrunning ones start without waiting for them."""
    stuck = []
    for index in range(MAX_PARALLEL_CHECKS + 2):

        def hang(ctx):
            time.sleep(5)
            yield ok("late")

        stuck.append(check(f"t-stuck-{index}", area="config", title="hangs")(hang))
    started = time.monotonic()

    findings = run_checks(make_context(tmp_path), [*stuck, passing], timeout=0.5)

    assert time.monotonic() - started < 3
    assert all("did not finish within 0.5 s" in f.title for f in findings[:-1])
    assert findings[-1].severity is Severity.OK
