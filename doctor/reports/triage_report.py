"""Render the 502 triage: the verdict first, then evidence, fix and the rest."""

from __future__ import annotations

import json
import re

from doctor import __version__
from doctor.redact import redact_text, redact_value


def triage_dict(result, header: list[tuple[str, str, str]], target: dict) -> dict:
    def candidate(c) -> dict:
        return {
            "cause": c.id,
            "title": c.title,
            "status": c.status,
            "verdict": c.verdict or c.title,
            "points": c.points,
            "evidence": list(c.evidence),
            "fix": c.fix,
        }

    data = {
        "doctor_version": __version__,
        "target": target,
        "verdict": candidate(result.winner) if result.winner else None,
        "other_causes": [candidate(c) for c in result.others],
        "ruled_out": [
            {"cause": c.id, "title": c.title, "why": c.ruled_out_because}
            for c in result.ruled_out
        ],
        "probes": [
            {
                "bind": run.bind,
                "address": run.outcome.address.describe(),
                "verdict": run.outcome.verdict,
                "status": run.outcome.status,
                "elapsed": run.outcome.elapsed,
                "header_bytes": run.outcome.header_bytes,
                "detail": run.outcome.detail,
                "through_nginx": run.through_nginx,
            }
            for run in result.probes
        ],
        "logs": {
            source: {
                signature: {
                    "count": s.count,
                    "first": s.first.isoformat() if s.first else None,
                    "last": s.last.isoformat() if s.last else None,
                    "samples": s.samples,
                }
                for signature, s in summaries.items()
            }
            for source, summaries in result.log_summaries.items()
        },
        "not_examined": list(result.unavailable),
        "header": [list(row) for row in header],
    }
    return redact_value(data)


def render_triage_json(result, header, target) -> str:
    return json.dumps(triage_dict(result, header, target), indent=2, ensure_ascii=False)


def _cell(text: str, *, code: bool = False) -> str:
    """Make ``text`` safe inside a Markdown table cell."""
    text = str(text).replace("|", "\\|").replace("\n", " ")
    if code:
        fence = "``" if "`" in text else "`"
        return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"
    return text


def render_triage_markdown(result, header, target) -> str:
    """Render a report to paste into a ticket; secrets are removed."""
    data = triage_dict(result, header, target)
    lines = ["## gunicorn-doctor triage: why 502", ""]
    verdict = data["verdict"]
    if verdict:
        lines += [f"**Verdict:** {verdict['verdict']}", ""]
        if verdict["fix"]:
            lines += [f"**Fix:** {verdict['fix']}", ""]
        fence = _code_fence(verdict["evidence"])
        lines += ["**Evidence:**", "", fence, *verdict["evidence"], fence, ""]
    else:
        lines += [
            (
                "**Verdict:** no evidence of a 502 cause was found in the probes, the"
                " processes or the logs read."
            ),
            "",
        ]
    for other in data["other_causes"]:
        lines += [f"- **Also seen ({other['status']}):** {other['verdict']}"]
        if other["fix"]:
            lines += [f"  - fix: {other['fix']}"]
    if data["other_causes"]:
        lines.append("")
    if data["ruled_out"]:
        lines += ["**Ruled out:**", ""]
        lines += [f"- {c['title']}: {c['why']}" for c in data["ruled_out"]]
        lines.append("")
    if data["probes"]:
        lines += [
            "**Probes:**",
            "",
            "| address | result | status | time |",
            "| --- | --- | --- | --- |",
        ]
        for probe in data["probes"]:
            elapsed = (
                f"{probe['elapsed']:.3f} s" if probe["elapsed"] is not None else "-"
            )
            lines.append(
                f"| {_cell(probe['address'])} | {probe['verdict']} |"
                f" {probe['status'] or '-'} | {elapsed} |"
            )
        lines.append("")
    lines += ["**Deployment:**", "", "| | value | from |", "| --- | --- | --- |"]
    lines += [
        f"| {label} | {_cell(value, code=True)} | {_cell(source)} |"
        for label, value, source in data["header"]
    ]
    if data["not_examined"]:
        lines += ["", "**Not examined:**", ""]
        lines += [f"- {item}" for item in data["not_examined"]]
    lines += ["", f"_gunicorn-doctor {__version__}_"]
    return "\n".join(lines)


def _code_fence(lines: list[str]) -> str:
    """Return a backtick fence longer than any run of backticks in ``lines``.

    Log lines quote request URLs that any client chooses, and nginx logs
    backticks in them as they are, so a fixed fence could be closed early.
    """
    longest = max(
        (len(run) for line in lines for run in re.findall("`+", line)), default=0
    )
    return "`" * max(3, longest + 1)


def print_triage(result, header, target, *, plain: bool, ascii_only: bool) -> None:
    import os
    import sys

    from rich.console import Console
    from rich.markup import escape

    no_color = plain or "NO_COLOR" in os.environ or not sys.stdout.isatty()
    console = Console(
        no_color=no_color, highlight=False, soft_wrap=no_color, emoji=False
    )

    def out(text: str, style: str | None = None) -> None:
        console.print(escape(redact_text(text)), style=None if no_color else style)

    out("gunicorn-doctor triage: why 502", "bold")
    for label, value, source in header:
        out(f"  {label}  {value}  [{source}]")
    out("")
    winner = result.winner
    if winner is None:
        out("No evidence of a 502 cause was found.", "bold green")
    else:
        out(f"Verdict: {winner.verdict or winner.title}", "bold red")
        for line in winner.evidence:
            out(f"  | {line}", "dim")
        if winner.fix:
            out(f"  fix: {winner.fix}", "green")
    for other in result.others:
        out("")
        out(f"Also seen ({other.status}): {other.verdict or other.title}", "yellow")
        for line in other.evidence:
            out(f"  | {line}", "dim")
        if other.fix:
            out(f"  fix: {other.fix}", "green")
    if result.ruled_out:
        out("")
        out("Ruled out:", "bold")
        mark = "-" if ascii_only else "·"
        for candidate in result.ruled_out:
            out(f"  {mark} {candidate.title}: {candidate.ruled_out_because}")
    if result.probes:
        out("")
        out("Probes:", "bold")
        for run in result.probes:
            out(f"  {run.bind}: {run.outcome.verdict} — {run.outcome.detail}")
    if result.unavailable:
        out("")
        out("Not examined:", "bold")
        for item in result.unavailable:
            out(f"  {item}")
