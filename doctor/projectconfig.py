"""Project configuration: ``[tool.gunicorn-doctor]`` in pyproject.toml or
``.gunicorn-doctor.toml``, found from the deployment directory upward.

It sets defaults for the command-line options and lists waivers: each waiver
names a check id (and optionally a path), gives a required reason, and may
expire. Command-line options override the file.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from doctor.findings import Finding, Location, Severity

FILE_NAMES = (".gunicorn-doctor.toml", "pyproject.toml")
SEVERITIES = ("info", "warning", "error")
FORMATS = ("rich", "plain", "json", "markdown", "junit", "sarif")
# Option name in the file -> (key in the merged options, accepted type).
OPTIONS = {
    "select": ("select", list),
    "ignore": ("ignore", list),
    "fail-on": ("fail_on", str),
    "static": ("static", bool),
    "format": ("format", str),
    "check-timeout": ("check_timeout", float),
    "probe-timeout": ("probe_timeout", float),
    "lb-idle-timeout": ("lb_idle_timeout", float),
}


class ToolConfigError(Exception):
    """The project configuration cannot be used; the CLI exits with code 2."""


@dataclass(frozen=True)
class Waiver:
    check: str
    reason: str
    path: str | None
    expires: date | None
    source: str

    def covers(self, finding: Finding) -> bool:
        if finding.check != self.check:
            return False
        if self.path is None:
            return True
        where = finding.location.path if finding.location else ""
        return fnmatch.fnmatch(where, self.path) or where.endswith("/" + self.path)


@dataclass
class ToolConfig:
    path: str | None = None
    values: dict[str, object] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    waivers: list[Waiver] = field(default_factory=list)


def find_config_file(start: Path) -> tuple[Path, dict] | None:
    """Return the nearest config file from ``start`` upward and its table."""
    for directory in (start, *start.parents):
        for name in FILE_NAMES:
            candidate = directory / name
            if not candidate.is_file():
                continue
            data = _parse(candidate)
            if name == "pyproject.toml":
                table = data.get("tool", {}).get("gunicorn-doctor")
                if table is None:
                    continue
                return candidate, table
            return candidate, data
    return None


def _parse(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolConfigError(f"{path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolConfigError(f"{path} is not valid TOML: {exc}") from None


def load_tool_config(start: Path) -> ToolConfig:
    """Load the project configuration that applies to ``start``, or an empty one."""
    found = find_config_file(Path(start))
    if found is None:
        return ToolConfig()
    path, table = found
    if not isinstance(table, dict):
        raise ToolConfigError(f"{path}: [tool.gunicorn-doctor] must be a table")
    config = ToolConfig(path=str(path))
    for name, value in table.items():
        if name == "waivers":
            config.waivers = _waivers(path, value)
            continue
        if name not in OPTIONS:
            known = ", ".join(sorted([*OPTIONS, "waivers"]))
            raise ToolConfigError(
                f"{path}: unknown option {name!r}; known options: {known}"
            )
        key, kind = OPTIONS[name]
        config.values[key] = _validate(path, name, value, kind)
        config.sources[key] = str(path)
    return config


def _validate(path: Path, name: str, value, kind):
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ToolConfigError(f"{path}: {name} = {value!r} must not be negative")
        return float(value)
    if kind is list and isinstance(value, str):
        value = [value]
    if not isinstance(value, kind):
        raise ToolConfigError(f"{path}: {name} = {value!r} must be a {kind.__name__}")
    if name == "fail-on" and value not in SEVERITIES:
        raise ToolConfigError(
            f"{path}: fail-on = {value!r} must be one of {', '.join(SEVERITIES)}"
        )
    if name == "format" and value not in FORMATS:
        raise ToolConfigError(
            f"{path}: format = {value!r} must be one of {', '.join(FORMATS)}"
        )
    return value


def _waivers(path: Path, entries) -> list[Waiver]:
    if not isinstance(entries, list):
        raise ToolConfigError(f"{path}: waivers must be an array of tables")
    waivers = []
    for index, entry in enumerate(entries, 1):
        where = f"{path} waiver #{index}"
        if not isinstance(entry, dict):
            raise ToolConfigError(f"{where} must be a table")
        unknown = set(entry) - {"check", "reason", "path", "expires"}
        if unknown:
            raise ToolConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}"
            )
        check = entry.get("check")
        reason = entry.get("reason")
        if not isinstance(check, str) or not check:
            raise ToolConfigError(f'{where} needs check = "CHECK-ID"')
        if not isinstance(reason, str) or not reason.strip():
            raise ToolConfigError(
                f'{where} ({check}) needs a reason = "why this is accepted"'
            )
        expires = entry.get("expires")
        if isinstance(expires, str):
            try:
                expires = date.fromisoformat(expires)
            except ValueError:
                raise ToolConfigError(
                    f"{where} ({check}): expires = {expires!r} is not a date like 2027-01-31"
                ) from None
        if expires is not None and not isinstance(expires, date):
            raise ToolConfigError(f"{where} ({check}): expires must be a date")
        path_value = entry.get("path")
        if path_value is not None and not isinstance(path_value, str):
            raise ToolConfigError(f"{where} ({check}): path must be a string")
        waivers.append(Waiver(check, reason.strip(), path_value, expires, where))
    return waivers


def apply_waivers(
    findings: list[Finding], config: ToolConfig, *, today: date
) -> list[Finding]:
    """Mark the findings that waivers cover, and report expired and unused waivers."""
    if not config.waivers:
        return findings
    used: set[int] = set()
    result = []
    for finding in findings:
        for index, waiver in enumerate(config.waivers):
            if not waiver.covers(finding):
                continue
            if waiver.expires is not None and waiver.expires < today:
                continue
            used.add(index)
            if finding.severity in (Severity.WARNING, Severity.ERROR, Severity.INFO):
                finding = replace(
                    finding,
                    waiver={
                        "reason": waiver.reason,
                        "expires": waiver.expires.isoformat()
                        if waiver.expires
                        else None,
                        "source": waiver.source,
                    },
                )
            break
        result.append(finding)
    for index, waiver in enumerate(config.waivers):
        if waiver.expires is not None and waiver.expires < today:
            result.append(
                Finding(
                    check="doctor-waiver",
                    area="doctor",
                    severity=Severity.WARNING,
                    title=f"the waiver for {waiver.check} expired on {waiver.expires}",
                    detail=f"It no longer applies. Its reason was: {waiver.reason}",
                    fix="Fix the finding, or extend expires after review",
                    location=Location(config.path or "", None),
                )
            )
        elif index not in used:
            result.append(
                Finding(
                    check="doctor-waiver",
                    area="doctor",
                    severity=Severity.INFO,
                    title=f"the waiver for {waiver.check} matched no finding",
                    detail=f"Remove it if the problem is gone. Its reason was: {waiver.reason}",
                    location=Location(config.path or "", None),
                )
            )
    return result
