"""The Markdown report, to paste into a ticket or a merge-request comment.

It has the target table, the summary, every ``error``, ``warning`` and
``info`` finding with its evidence, location and fix (errors first, waived
findings last), and the ``ok`` and ``skipped`` findings in a collapsed
``<details>`` list. Text from the examined system is escaped, and evidence
goes into fenced code blocks, so that it renders as written on GitHub and
GitLab.
"""

from __future__ import annotations

import re

from doctor import __version__
from doctor.findings import Finding, Severity
from doctor.reports import Report

SHOWN = (Severity.ERROR, Severity.WARNING, Severity.INFO)
LABELS = {
    Severity.ERROR: "✗ error",
    Severity.WARNING: "! warning",
    Severity.INFO: "i info",
}
SUMMARY_ORDER = ("error", "warning", "info", "ok", "skipped")
# Characters that start Markdown or HTML syntax anywhere in a line.
_SPECIAL = re.compile(r"([\\`*\[\]<|&])")
# An underscore opens or closes emphasis unless it sits inside a word.
_LOOSE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# Characters that turn a line into a heading, list item, quote or rule.
_LINE_START = re.compile(r"^(\s*)([#>+\-=])", re.MULTILINE)
_ORDERED_ITEM = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)


def render_markdown(report: Report) -> str:
    """Render ``report`` as a Markdown document."""
    blocks = ["# gunicorn-doctor report", _target_table(report)]
    if report.notes:
        blocks.append("\n".join(f"- note: {escape(note)}" for note in report.notes))
    blocks.append(_summary(report))

    problems = [f for f in report.findings if f.severity in SHOWN]
    problems.sort(key=lambda f: (f.waiver is not None, -f.severity.rank))
    if problems:
        blocks.append("## Findings")
        blocks.extend(_finding_section(f) for f in problems)

    passed = [f for f in report.findings if f.severity not in SHOWN]
    if passed:
        blocks.append(_passed_list(passed))
    blocks.append(f"<sub>gunicorn-doctor {__version__}</sub>")
    return "\n\n".join(blocks)


def _target_table(report: Report) -> str:
    rows = ["| | value | source |", "| --- | --- | --- |"]
    for label, value, source in report.header:
        rows.append(
            f"| {_cell(label)} | {_code(value, in_table=True)} | {_cell(source)} |"
        )
    if len(rows) == 2:
        return "No deployment was identified."
    return "\n".join(rows)


def _summary(report: Report) -> str:
    summary = report.summary
    parts = [f"{summary[name]} {name}" for name in SUMMARY_ORDER]
    line = f"**Summary:** {', '.join(parts)}"
    if summary.get("waived"):
        line += f" ({summary['waived']} waived)"
    return f"{line}; exit code {report.exit_code}"


def _finding_section(finding: Finding) -> str:
    heading = f"### {LABELS[finding.severity]}: {_cell(finding.title)}"
    if finding.waiver is not None:
        heading += " (waived)"
    lines = [heading, "", f"Check: `{finding.check}` ({finding.area})"]
    if finding.waiver is not None:
        waived = f"**Waived:** {escape(finding.waiver.get('reason', ''))}"
        if finding.waiver.get("expires"):
            waived += f" (until {finding.waiver['expires']})"
        lines += ["", waived]
    if finding.detail and finding.detail != finding.title:
        lines += ["", _paragraph(finding.detail)]
    if finding.location:
        lines += ["", f"Location: {_code(str(finding.location))}"]
    if finding.evidence:
        lines += ["", "Evidence:", "", _fenced("\n".join(finding.evidence))]
    if finding.fix:
        if "\n" in finding.fix:
            lines += ["", "**Fix:**", "", _fenced(finding.fix)]
        else:
            lines += ["", f"**Fix:** {escape(finding.fix)}"]
    return "\n".join(lines)


def _passed_list(findings: list[Finding]) -> str:
    parts = []
    for severity in (Severity.OK, Severity.SKIPPED):
        count = sum(f.severity is severity for f in findings)
        if count:
            parts.append(f"{count} {severity}")
    lines = [
        "<details>",
        f"<summary>Passed and skipped checks: {', '.join(parts)}</summary>",
        "",
    ]
    for finding in findings:
        item = f"- {finding.severity} `{finding.check}`: "
        item += _cell(finding.title)
        if finding.severity is Severity.SKIPPED and finding.detail != finding.title:
            item += f" ({_cell(finding.detail)})"
        lines.append(item)
    lines += ["", "</details>"]
    return "\n".join(lines)


def escape(text: str) -> str:
    """Escape ``text`` so that Markdown shows it literally."""
    text = _escape_inline(text)
    text = _LINE_START.sub(r"\1\\\2", text)
    return _ORDERED_ITEM.sub(r"\1\\\2", text)


def _paragraph(text: str) -> str:
    """Escape ``text`` and keep its line breaks, which Markdown would join."""
    return "\\\n".join(escape(line) for line in text.splitlines())


def _escape_inline(text: str) -> str:
    """Escape the characters that have a meaning anywhere in a line."""
    text = _SPECIAL.sub(r"\\\1", text)
    return _LOOSE_UNDERSCORE.sub(r"\\_", text)


def _cell(text: str) -> str:
    return _escape_inline(_one_line(text))


def _code(text: str, *, in_table: bool = False) -> str:
    """Return ``text`` as inline code, with a fence longer than any backtick run."""
    text = _one_line(text)
    if not text:
        return ""
    ticks = "`" * (_longest_backtick_run(text) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    if in_table:
        # In a GFM table a pipe ends the cell even inside code.
        text = text.replace("|", "\\|")
    return f"{ticks}{padding}{text}{padding}{ticks}"


def _fenced(text: str) -> str:
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}\n{text}\n{fence}"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _one_line(text: str) -> str:
    return " ".join(text.split())
