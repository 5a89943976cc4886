"""The JSON report: the machine-readable contract."""

from __future__ import annotations

import json

from doctor import __version__
from doctor.reports import Report


def report_dict(report: Report) -> dict:
    return {
        "doctor_version": __version__,
        "target": report.target,
        "findings": [f.to_dict() for f in report.findings],
        "summary": report.summary,
        "exit_code": report.exit_code,
        "notes": report.notes,
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False)
