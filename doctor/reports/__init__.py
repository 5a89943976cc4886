"""Report formats; each renders the same :class:`Report`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from doctor.findings import Finding, summarize
from doctor.redact import redact_finding, redact_text, redact_value

# Formats rendered to a string, by module and function.
TEXT_RENDERERS = {
    "json": ("doctor.reports.json_report", "render_json"),
    "markdown": ("doctor.reports.markdown", "render_markdown"),
    "junit": ("doctor.reports.junit", "render_junit"),
    "sarif": ("doctor.reports.sarif", "render_sarif"),
}
FORMATS = ("rich", "plain", "json", "markdown", "junit", "sarif")


@dataclass
class Report:
    findings: list[Finding]
    exit_code: int
    header: list[tuple[str, str, str]] = field(default_factory=list)
    target: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The checks that ran, for formats that describe them (SARIF rules).
    checks: list = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        return summarize(self.findings)

    def redacted(self) -> Report:
        """Return a copy with secrets removed from every string."""
        return Report(
            findings=[redact_finding(f) for f in self.findings],
            exit_code=self.exit_code,
            header=[(k, redact_text(v), redact_text(s)) for k, v, s in self.header],
            target=redact_value(self.target),
            notes=[redact_text(n) for n in self.notes],
            checks=self.checks,
        )


def render(
    report: Report, fmt: str, *, ascii_only: bool = False, verbose: bool = False
) -> str | None:
    """Render ``report`` in ``fmt``; rich output is printed and None returned."""
    report = report.redacted()
    if fmt in TEXT_RENDERERS:
        module, function = TEXT_RENDERERS[fmt]
        return getattr(importlib.import_module(module), function)(report)
    from doctor.reports.console import print_report

    print_report(report, plain=fmt == "plain", ascii_only=ascii_only, verbose=verbose)
    return None


def render_many(
    reports: list[Report], fmt: str, *, ascii_only: bool = False, verbose: bool = False
) -> str | None:
    """Render one report per target: a JSON list, or one section each."""
    if fmt == "json":
        import json

        from doctor.reports.json_report import report_dict

        return json.dumps(
            [report_dict(r.redacted()) for r in reports], indent=2, ensure_ascii=False
        )
    if fmt in ("junit", "sarif"):
        raise ValueError(f"--all cannot write {fmt}: one file holds one target")
    texts = []
    for index, report in enumerate(reports):
        if index and fmt not in TEXT_RENDERERS:
            print()
        text = render(report, fmt, ascii_only=ascii_only, verbose=verbose)
        if text is not None:
            texts.append(text)
    return "\n\n".join(texts) if texts else None


def output_path_problem(paths: dict[str, Path | str | None]) -> str | None:
    """Describe why the --output-FORMAT files in ``paths`` cannot be written.

    ``paths`` maps a format to its file, or to None when not given. Returns
    None when every file can be created or replaced.
    """
    given = [(fmt, Path(path)) for fmt, path in paths.items() if path is not None]
    targets = [path.resolve() for _, path in given]
    if len(set(targets)) < len(targets):
        return (
            "two --output-FORMAT options name the same file; give each format"
            " its own file"
        )
    for fmt, path in given:
        if path.is_dir():
            return f"--output-{fmt} {path}: is a directory; name a file in it"
        if not path.resolve().parent.is_dir():
            return (
                f"--output-{fmt} {path}: the directory {path.resolve().parent}"
                " does not exist; create it or name a file in an existing one"
            )
    return None
