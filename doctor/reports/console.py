"""The terminal report: grouped by area, a mark per finding, evidence and fix.

Colour and Unicode marks on a terminal; plain text when stdout is not a
terminal, when ``NO_COLOR`` is set, or with ``--format plain``; ASCII marks
when the output encoding cannot show the Unicode ones or with ``--ascii``.
"""

from __future__ import annotations

import os
import sys

from doctor.findings import AREAS, Finding, Severity
from doctor.reports import Report

UNICODE_MARKS = {
    Severity.OK: "✓",
    Severity.INFO: "i",
    Severity.WARNING: "!",
    Severity.ERROR: "✗",
    Severity.SKIPPED: "-",
}
ASCII_MARKS = {
    Severity.OK: "ok",
    Severity.INFO: "i",
    Severity.WARNING: "!",
    Severity.ERROR: "X",
    Severity.SKIPPED: "-",
}
STYLES = {
    Severity.OK: "green",
    Severity.INFO: "cyan",
    Severity.WARNING: "yellow",
    Severity.ERROR: "bold red",
    Severity.SKIPPED: "dim",
}


def _can_encode(text: str) -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def print_report(
    report: Report, *, plain: bool, ascii_only: bool, verbose: bool
) -> None:
    from rich.console import Console
    from rich.markup import escape

    no_color = plain or "NO_COLOR" in os.environ or not sys.stdout.isatty()
    console = Console(
        no_color=no_color,
        highlight=False,
        soft_wrap=no_color,
        force_terminal=False if no_color else None,
        emoji=False,
    )
    use_ascii = ascii_only or not _can_encode("✓✗")
    marks = ASCII_MARKS if use_ascii else UNICODE_MARKS

    def out(text: str, style: str | None = None) -> None:
        console.print(escape(text), style=None if no_color else style)

    out("gunicorn-doctor", "bold")
    width = max((len(label) for label, _, _ in report.header), default=0)
    for label, value, source in report.header:
        out(f"  {label.ljust(width)}  {value}  [{source}]")
    for note in report.notes:
        out(f"  note: {note}", "yellow")

    by_area: dict[str, list[Finding]] = {}
    for finding in report.findings:
        by_area.setdefault(finding.area, []).append(finding)
    ordered = [a for a in AREAS if a in by_area] + [
        a for a in by_area if a not in AREAS
    ]
    for area in ordered:
        out("")
        out(area, "bold underline")
        for finding in by_area[area]:
            _print_finding(out, finding, marks, verbose)

    summary = report.summary
    out("")
    parts = [f"{summary[s]} {s}" for s in ("error", "warning", "info", "ok", "skipped")]
    if summary.get("waived"):
        parts.append(f"{summary['waived']} waived")
    style = "bold red" if report.exit_code else "bold green"
    out(f"Summary: {', '.join(parts)}; exit code {report.exit_code}", style)


def _print_finding(out, finding: Finding, marks: dict, verbose: bool) -> None:
    mark = marks[finding.severity]
    timing = f" ({finding.duration:.2f} s)" if verbose and finding.duration else ""
    waived = " (waived)" if finding.waiver else ""
    style = "dim" if finding.waiver else STYLES[finding.severity]
    out(f"  {mark} {finding.title}  [{finding.check}]{waived}{timing}", style)
    if finding.waiver:
        expires = finding.waiver.get("expires")
        out(
            f"      waived: {finding.waiver.get('reason')}"
            + (f" (until {expires})" if expires else ""),
            "dim",
        )
    show_body = finding.severity in (Severity.WARNING, Severity.ERROR, Severity.INFO)
    if finding.severity is Severity.SKIPPED or verbose:
        show_body = True
    if not show_body:
        return
    if finding.detail and finding.detail != finding.title:
        for line in finding.detail.splitlines():
            out(f"      {line}")
    if finding.location:
        out(f"      at {finding.location}", "dim")
    for line in finding.evidence:
        for part in line.splitlines() or [""]:
            out(f"      | {part}", "dim")
    if finding.fix:
        lines = finding.fix.splitlines()
        out(f"      fix: {lines[0]}", "green")
        for line in lines[1:]:
            out(f"           {line}", "green")
