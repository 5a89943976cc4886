"""Findings: what a check reports, and the severities they carry."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class Severity(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def rank(self) -> int:
        """Order used by ``--fail-on``; ``skipped`` ranks with ``ok``."""
        return _RANKS[self]


_RANKS = {
    Severity.OK: 0,
    Severity.SKIPPED: 0,
    Severity.INFO: 1,
    Severity.WARNING: 2,
    Severity.ERROR: 3,
}

AREAS = (
    "venv",
    "import",
    "port",
    "logs",
    "pidfile",
    "upstream",
    "timeouts",
    "workers",
    "systemd",
    "nginx",
    "config",
    "doctor",
)


class Location(NamedTuple):
    path: str
    line: int | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "line": self.line}

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass
class Finding:
    """One result of a check; the field names are the JSON contract."""

    check: str
    area: str
    severity: Severity
    title: str
    detail: str = ""
    fix: str | None = None
    evidence: list[str] = field(default_factory=list)
    location: Location | None = None
    duration: float | None = None
    # Set when a project waiver covers the finding: {"reason", "expires", "source"}.
    waiver: dict | None = None

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "area": self.area,
            "severity": str(self.severity),
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
            "evidence": list(self.evidence),
            "location": self.location.to_dict() if self.location else None,
            "duration": self.duration,
            "waiver": self.waiver,
        }


def summarize(findings: list[Finding]) -> dict[str, int]:
    counts = {str(severity): 0 for severity in Severity}
    counts["waived"] = 0
    for finding in findings:
        counts[str(finding.severity)] += 1
        if finding.waiver is not None:
            counts["waived"] += 1
    return counts


def exit_code_for(findings: list[Finding], fail_on: Severity) -> int:
    """Return 1 when a finding that no waiver covers reaches ``fail_on``, else 0."""
    threshold = fail_on.rank
    live = [f for f in findings if f.waiver is None]
    if any(f.severity.rank >= threshold > 0 for f in live):
        return 1
    return 0


def _make(severity: Severity):
    def make(
        title: str,
        detail: str = "",
        *,
        fix: str | None = None,
        evidence: list[str] | None = None,
        location: Location | None = None,
        check: str = "",
    ) -> Finding:
        return Finding(
            check=check,
            area="",
            severity=severity,
            title=title,
            detail=detail,
            fix=fix,
            evidence=list(evidence or []),
            location=location,
        )

    make.__name__ = str(severity)
    make.__doc__ = (
        f"Build a {severity} finding; the runner fills in the check id and area."
    )
    return make


ok = _make(Severity.OK)
info = _make(Severity.INFO)
warning = _make(Severity.WARNING)
error = _make(Severity.ERROR)


def skipped(reason: str, *, check: str = "") -> Finding:
    """Build a finding for a check that could not look, with the reason."""
    return Finding(
        check=check, area="", severity=Severity.SKIPPED, title=reason, detail=reason
    )
