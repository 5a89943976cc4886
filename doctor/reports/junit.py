"""The JUnit XML report, in the schema that GitLab and Jenkins read.

A ``<testsuites>`` root with the same totals contains one ``<testsuite
name="gunicorn-doctor">``, which has one ``<testcase>`` per check
that ran, in the order the checks ran, plus one per check id that only the
doctor itself reports (``doctor-waiver``). A check's findings are grouped
into its test case, and the case's outcome is decided by the worst finding
that no waiver covers:

- a check that crashed or timed out (an error finding in area ``doctor``)
  gets ``<error>``;
- an ``error`` finding gets ``<failure type="error">``;
- a ``warning`` finding gets ``<failure type="warning">``. The report cannot
  tell which ``--fail-on`` level the run used, so warnings are listed as
  failures to make them visible in the merge-request test summary. Whether
  the pipeline fails is decided by the exit code, not by this file;
- a check whose findings are all ``skipped`` gets ``<skipped>`` with the
  reason;
- ``ok`` and ``info`` findings, and findings a waiver covers, pass. They are
  listed in ``<system-out>``, waived ones with the waiver's reason.

The ``<failure>`` or ``<error>`` message is the worst finding's title; the
body lists every problem of the check with its detail, location, evidence
and fix. A case's time is the check's duration; the suite's time is the sum
of the case times, although the checks run concurrently.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from doctor import __version__
from doctor.findings import Finding, Severity
from doctor.reports import Report

SUITE_NAME = "gunicorn-doctor"
PROBLEMS = (Severity.ERROR, Severity.WARNING)
# Check ids that the doctor reports itself, outside any registered check.
DOCTOR_CHECKS = {"doctor-waiver": "The project's waivers are current and used"}
# Characters that XML 1.0 does not allow even as character references.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def render_junit(report: Report) -> str:
    """Render ``report`` as a JUnit XML document."""
    suite = ET.Element("testsuite", name=SUITE_NAME)
    _add_properties(suite, report)

    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for check_id, area, title, findings in _group_by_check(report):
        case, outcome, seconds = _testcase(check_id, area, title, findings)
        suite.append(case)
        counts["tests"] += 1
        if outcome is not None:
            counts[outcome] += 1
        total_time += seconds

    for name, value in counts.items():
        suite.set(name, str(value))
    suite.set("time", _seconds(total_time))
    if report.notes:
        _text_element(suite, "system-out", "\n".join(report.notes))

    # GitLab and Jenkins also read a bare <testsuite>, but most other JUnit
    # readers expect a <testsuites> root with the same totals.
    suites = ET.Element("testsuites", name=SUITE_NAME)
    for name in ("tests", "failures", "errors", "skipped", "time"):
        suites.set(name, suite.get(name))
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _group_by_check(report: Report) -> list[tuple[str, str, str, list[Finding]]]:
    """Return (check id, area, title, findings) per check, in the order they ran.

    The title is the check's registered title, not a finding's, so that a
    test case keeps its name from one run to the next and CI servers can
    track it.
    """
    by_check: dict[str, list[Finding]] = {}
    described: dict[str, tuple[str, str]] = {}
    for spec in report.checks:
        by_check[spec.id] = []
        described[spec.id] = (spec.area, spec.title)
    for finding in report.findings:
        by_check.setdefault(finding.check, []).append(finding)
        described.setdefault(
            finding.check, (finding.area, DOCTOR_CHECKS.get(finding.check, ""))
        )
    return [
        (check_id, *described[check_id], found) for check_id, found in by_check.items()
    ]


def _testcase(
    check_id: str, area: str, title: str, findings: list[Finding]
) -> tuple[ET.Element, str | None, float]:
    """Build one check's test case and return it with its outcome counter and time."""
    seconds = max((f.duration or 0.0 for f in findings), default=0.0)
    name = f"{check_id}: {title}" if title else check_id
    case = ET.Element("testcase", classname=area, name=name, time=_seconds(seconds))

    live = [f for f in findings if f.waiver is None]
    crashes = [f for f in live if f.area == "doctor" and f.severity is Severity.ERROR]
    problems = [f for f in live if f.severity in PROBLEMS and f not in crashes]
    problems.sort(key=lambda f: -f.severity.rank)
    reported = crashes + problems
    outcome = None
    if crashes:
        outcome = "errors"
        _problem_element(case, "error", "crash", reported)
    elif problems:
        outcome = "failures"
        _problem_element(case, "failure", str(problems[0].severity), reported)
    elif findings and all(f.severity is Severity.SKIPPED for f in findings):
        outcome = "skipped"
        reasons = "; ".join(dict.fromkeys(f.detail or f.title for f in findings))
        ET.SubElement(case, "skipped", message=_clean(reasons))

    passed = [f for f in findings if f not in reported]
    if outcome == "skipped":
        passed = [f for f in passed if f.severity is not Severity.SKIPPED]
    if passed:
        _text_element(case, "system-out", "\n".join(_passed_line(f) for f in passed))
    elif not findings:
        # The runner turns a check without findings into a crash finding, so
        # this happens only when a check reports under other ids.
        _text_element(case, "system-out", f"no finding has the check id {check_id}")
    return case, outcome, seconds


def _problem_element(
    case: ET.Element, tag: str, kind: str, findings: list[Finding]
) -> None:
    message = findings[0].title
    if len(findings) > 1:
        message += f" (and {len(findings) - 1} more)"
    body = "\n\n".join(_finding_body(f) for f in findings)
    element = ET.SubElement(case, tag, message=_clean(message), type=kind)
    element.text = _clean(body)


def _finding_body(finding: Finding) -> str:
    """Return the plain-text description of one problem finding."""
    lines = [f"[{finding.severity}] {finding.title}"]
    if finding.detail and finding.detail != finding.title:
        lines.append(finding.detail)
    if finding.location:
        lines.append(f"location: {finding.location}")
    if finding.evidence:
        lines.append("evidence:")
        lines.extend(f"  {part}" for e in finding.evidence for part in e.splitlines())
    if finding.fix and "\n" in finding.fix:
        lines.append("fix:")
        lines.extend(f"  {part}" for part in finding.fix.splitlines())
    elif finding.fix:
        lines.append(f"fix: {finding.fix}")
    return "\n".join(lines)


def _passed_line(finding: Finding) -> str:
    line = f"[{finding.severity}] {finding.title}"
    if finding.waiver is not None:
        reason = finding.waiver.get("reason", "")
        expires = finding.waiver.get("expires")
        line = f"[waived {finding.severity}] {finding.title}; waiver: {reason}"
        if expires:
            line += f" (expires {expires})"
    elif finding.severity in (Severity.INFO, Severity.SKIPPED) and finding.detail:
        line += f": {finding.detail}"
    return line


def _add_properties(suite: ET.Element, report: Report) -> None:
    properties = ET.SubElement(suite, "properties")
    rows = [("doctor_version", __version__), ("exit_code", str(report.exit_code))]
    rows += [(label, value) for label, value, _source in report.header]
    for name, value in rows:
        ET.SubElement(properties, "property", name=name, value=_clean(value))


def _text_element(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = _clean(text)


def _clean(text: str) -> str:
    """Replace characters XML 1.0 cannot carry, such as terminal escape codes."""
    return _INVALID_XML.sub("\N{REPLACEMENT CHARACTER}", text)


def _seconds(value: float) -> str:
    return f"{value:.3f}"
