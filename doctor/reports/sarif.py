"""The SARIF 2.1.0 report, for code-scanning services such as GitHub's.

One run: the tool's driver lists a rule per check that ran (plus the ids the
doctor reports itself), and every ``error``, ``warning`` and ``info`` finding
becomes a result with level ``error``, ``warning`` or ``note``. ``ok`` and
``skipped`` findings are not results. A finding a project waiver covers
carries an external suppression with the waiver's reason.

Locations: a finding's path is a path on the examined system. With
``--root`` it is looked up under the root, so a tree checked into the
repository maps to its files there. A path inside the current working
directory (in CI, the repository checkout) becomes a URI relative to
``%SRCROOT%``. Any other path becomes an absolute ``file:`` URI. GitHub code
scanning rejects the whole file when one result has no location, so a finding
without one is placed on the gunicorn config file, else the systemd unit,
else the deployment directory, and marked ``"defaultLocation": true`` in its
properties.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from doctor import __version__
from doctor.findings import Finding, Location, Severity
from doctor.reports import Report

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SRCROOT = "%SRCROOT%"
LEVELS = {
    Severity.ERROR: "error",
    Severity.WARNING: "warning",
    Severity.INFO: "note",
}
# Check ids that the doctor reports itself, outside any registered check.
DOCTOR_RULES = {
    "doctor-waiver": (
        "The project's waivers are current and used",
        (
            "Reports a waiver in [tool.gunicorn-doctor] that has expired, as a"
            " warning, and one that matched no finding, as info."
        ),
    ),
}


def render_sarif(report: Report, *, cwd: Path | None = None) -> str:
    """Render ``report`` as a SARIF 2.1.0 log with paths relative to ``cwd``.

    ``cwd`` defaults to the current working directory.
    """
    return json.dumps(sarif_log(report, cwd=cwd), indent=2, ensure_ascii=False)


def sarif_log(report: Report, *, cwd: Path | None = None) -> dict:
    """Build the SARIF 2.1.0 log of ``report`` as a JSON-ready dict."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    rules, rule_index = _rules(report)
    locator = _Locator(report.target, base)
    results = [
        _result(finding, rule_index, locator)
        for finding in report.findings
        if finding.severity in LEVELS
    ]
    run: dict = {
        "tool": {
            "driver": {
                "name": "gunicorn-doctor",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": rules,
            }
        },
        "invocations": [_invocation(report)],
        "results": results,
        "columnKind": "unicodeCodePoints",
    }
    if locator.used_srcroot:
        run["originalUriBaseIds"] = {SRCROOT: {"uri": _directory_uri(base)}}
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def _rules(report: Report) -> tuple[list[dict], dict[str, int]]:
    """Return the rules, one per check id, and each id's index among them."""
    rules: list[dict] = []
    index: dict[str, int] = {}
    for spec in report.checks:
        if spec.id in index:
            continue
        index[spec.id] = len(rules)
        rules.append(_rule(spec.id, spec.area, spec.title, spec.docs))
    for finding in report.findings:
        if finding.check in index or finding.severity not in LEVELS:
            continue
        title, docs = DOCTOR_RULES.get(finding.check, (finding.check, finding.check))
        index[finding.check] = len(rules)
        rules.append(_rule(finding.check, finding.area, title, docs))
    return rules, index


def _rule(check_id: str, area: str, title: str, docs: str) -> dict:
    return {
        "id": check_id,
        "name": check_id,
        "shortDescription": {"text": title},
        "fullDescription": {"text": docs},
        "help": {"text": docs},
        "properties": {"tags": [area]},
    }


def _result(finding: Finding, rule_index: dict[str, int], locator: _Locator) -> dict:
    result: dict = {
        "ruleId": finding.check,
        "ruleIndex": rule_index[finding.check],
        "level": LEVELS[finding.severity],
        "message": {"text": _message(finding)},
    }
    location = locator.location(finding.location)
    defaulted = location is None
    if defaulted:
        location = locator.default_location()
    if location is not None:
        result["locations"] = [location]
    if finding.waiver is not None:
        result["suppressions"] = [
            {
                "kind": "external",
                "justification": finding.waiver.get("reason", ""),
            }
        ]
    properties: dict = {"area": finding.area, "severity": str(finding.severity)}
    if defaulted and location is not None:
        properties["defaultLocation"] = True
    if finding.evidence:
        properties["evidence"] = list(finding.evidence)
    if finding.waiver is not None and finding.waiver.get("expires"):
        properties["waiverExpires"] = finding.waiver["expires"]
    result["properties"] = properties
    return result


def _message(finding: Finding) -> str:
    """Join title, detail and fix into one message text."""
    title = finding.title
    parts = [title if title.endswith((".", "?", "!", ":")) else title + "."]
    if finding.detail and finding.detail != finding.title:
        parts.append(finding.detail)
    if finding.fix:
        parts.append(f"Fix: {finding.fix}")
    return "\n\n".join(parts)


def _invocation(report: Report) -> dict:
    invocation: dict = {"executionSuccessful": True}
    if report.notes:
        invocation["toolExecutionNotifications"] = [
            {"level": "note", "message": {"text": note}} for note in report.notes
        ]
    return invocation


class _Locator:
    """Turn a finding's location on the examined system into a SARIF location."""

    def __init__(self, target: dict, cwd: Path) -> None:
        root = target.get("root") or "/"
        self.root = None if root == "/" else PurePosixPath(os.path.abspath(root))
        self.chdir = _target_value(target, "chdir")
        self.cwd = PurePosixPath(os.path.abspath(cwd))
        self.used_srcroot = False
        config = _target_value(target, "config")
        if config and config.startswith("python:"):
            # gunicorn's "python:MODULE" names a module, not a file.
            config = None
        fallbacks = [config, _target_value(target, "unit"), self.chdir]
        self.fallback = next((path for path in fallbacks if path), None)

    def location(self, location: Location | None) -> dict | None:
        """Return the SARIF location of ``location``, or None when it has no path."""
        if location is None or not location.path:
            return None
        physical: dict = {"artifactLocation": self._artifact(location.path)}
        if location.line and location.line > 0:
            physical["region"] = {"startLine": location.line}
        return {"physicalLocation": physical}

    def default_location(self) -> dict | None:
        """Return the location of the deployment as a whole, for findings without one."""
        if self.fallback is None:
            return None
        return {"physicalLocation": {"artifactLocation": self._artifact(self.fallback)}}

    def _artifact(self, path: str) -> dict:
        host = self._host_path(path)
        try:
            relative = host.relative_to(self.cwd)
        except ValueError:
            return {"uri": Path(host).as_uri()}
        self.used_srcroot = True
        return {"uri": quote(relative.as_posix()), "uriBaseId": SRCROOT}

    def _host_path(self, path: str) -> PurePosixPath:
        """Return where ``path``, a path on the examined system, is on this host."""
        candidate = PurePosixPath(path)
        if not candidate.is_absolute() and self.chdir:
            candidate = PurePosixPath(self.chdir) / candidate
        # Paths of files the doctor read on this host, such as the project
        # configuration, are already under the root.
        if (
            self.root is not None
            and candidate.is_absolute()
            and not _is_within(candidate, self.root)
        ):
            candidate = self.root / candidate.relative_to("/")
        return PurePosixPath(os.path.normpath(self.cwd / candidate))


def _target_value(target: dict, name: str) -> str | None:
    entry = target.get(name)
    return entry.get("value") if isinstance(entry, dict) else None


def _is_within(path: PurePosixPath, directory: PurePosixPath) -> bool:
    return path == directory or directory in path.parents


def _directory_uri(directory: Path) -> str:
    uri = Path(os.path.abspath(directory)).as_uri()
    return uri if uri.endswith("/") else uri + "/"
