"""Project configuration: ``[tool.gunicorn-doctor]`` in pyproject.toml or
``.gunicorn-doctor.toml``, found from the deployment directory upward.

It sets defaults for the command-line options and lists waivers. Command-line
options override the file. In ``.gunicorn-doctor.toml`` the options are
top-level keys and the waivers are ``[[waivers]]`` tables; in pyproject.toml
they live under ``[tool.gunicorn-doctor]`` and ``[[tool.gunicorn-doctor.waivers]]``.
In one directory ``.gunicorn-doctor.toml`` wins, and a pyproject.toml without
the table is passed over.

A waiver names a check id and gives a required reason. ``path`` limits it to
findings whose location matches a glob. In the glob, ``*`` and ``?`` stay
within one path segment and ``**`` spans directories. A pattern that names a
directory covers everything under it, and a relative pattern starts from the
directory of the file that declares it. ``expires`` is the last day the
waiver applies.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import cached_property
from pathlib import Path

from doctor.findings import Finding, Location, Severity

FILE_NAMES = (".gunicorn-doctor.toml", "pyproject.toml")
PYPROJECT_TABLE = ("tool", "gunicorn-doctor")
SEVERITIES = ("info", "warning", "error")
FORMATS = ("rich", "plain", "json", "markdown", "junit", "sarif")
# Option name in the file -> key in the merged options of ``check``.
OPTIONS = {
    "select": "select",
    "ignore": "ignore",
    "fail-on": "fail_on",
    "static": "static",
    "format": "format",
    "check-timeout": "check_timeout",
    "probe-timeout": "probe_timeout",
    "lb-idle-timeout": "lb_idle_timeout",
}
# The value of each merged option of ``check`` that neither the command line
# nor the project configuration sets.
DEFAULTS = {
    "select": None,
    "ignore": None,
    "fail_on": "error",
    "static": False,
    "format": "rich",
    "check_timeout": 60.0,
    "probe_timeout": 20.0,
    "lb_idle_timeout": None,
}
# The smallest value each timeout accepts, the same as on the command line.
TIMEOUT_MINIMUMS = {"check-timeout": 0.1, "probe-timeout": 0.1, "lb-idle-timeout": 0}
WAIVER_KEYS = ("check", "reason", "path", "expires")
# Only findings that report a problem can be waived.
WAIVABLE = (Severity.INFO, Severity.WARNING, Severity.ERROR)


class ToolConfigError(Exception):
    """The project configuration cannot be used; the CLI exits with code 2."""


@dataclass(frozen=True)
class Waiver:
    """One accepted finding: the check id, why, where and until when."""

    check: str
    reason: str
    path: str | None
    expires: date | None
    source: str
    line: int | None = None
    # The directory that a relative ``path`` starts from, as a deployment path
    # (without the --root prefix), because finding locations are written so.
    base: str = "/"

    def is_expired(self, today: date) -> bool:
        """Return True when ``today`` is after the last day the waiver applies."""
        return self.expires is not None and self.expires < today

    def covers(self, finding: Finding) -> bool:
        """Return True when the waiver names the finding's check and location."""
        if finding.check != self.check:
            return False
        if self.path is None:
            return True
        if finding.location is None or not finding.location.path:
            return False
        where = finding.location.path
        if where.startswith("/"):
            return bool(self._absolute_pattern.fullmatch(posixpath.normpath(where)))
        return bool(self._relative_pattern.fullmatch(posixpath.normpath(where)))

    @cached_property
    def _absolute_pattern(self) -> re.Pattern[str]:
        pattern = self.path if self.path.startswith("/") else f"{self.base}/{self.path}"
        return compile_glob(pattern)

    @cached_property
    def _relative_pattern(self) -> re.Pattern[str]:
        return compile_glob(self.path)


@dataclass
class ToolConfig:
    """The options and waivers read from one configuration file."""

    path: str | None = None
    values: dict[str, object] = field(default_factory=dict)
    # Merged-option key -> "FILE:LINE", or "FILE" when the line was not found.
    sources: dict[str, str] = field(default_factory=dict)
    waivers: list[Waiver] = field(default_factory=list)


def merge_options(given: dict, tool: ToolConfig | None) -> dict:
    """Take each option from ``given``, else from ``tool``, else from DEFAULTS.

    ``given`` contains the command line's values, None where an option was not
    given.
    """
    chosen = {}
    for key, default in DEFAULTS.items():
        if given.get(key) is not None:
            chosen[key] = given[key]
        elif tool is not None and key in tool.values:
            chosen[key] = tool.values[key]
        else:
            chosen[key] = default
    return chosen


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a path glob to a regex that matches the path or anything under it.

    ``*``, ``?`` and ``[...]`` never match ``/``. A ``**`` that is a whole
    segment matches any number of directories.
    """
    trailing_slash = pattern.endswith("/")
    pattern = posixpath.normpath(pattern)
    if trailing_slash or pattern == "/":
        pattern = pattern.rstrip("/") + "/**"
    parts = []
    index = 0
    while index < len(pattern):
        at_segment_start = index == 0 or pattern[index - 1] == "/"
        if at_segment_start and pattern.startswith("**/", index):
            parts.append("(?:[^/]*/)*")
            index += 3
        elif at_segment_start and pattern[index:] == "**":
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            text, index = _glob_class(pattern, index)
            parts.append(text)
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts) + "(?:/.*)?", re.DOTALL)


def _glob_class(pattern: str, start: int) -> tuple[str, int]:
    """Translate the ``[...]`` at ``start``. An unclosed ``[`` is a literal."""
    end = start + 1
    if end < len(pattern) and pattern[end] in "!^":
        end += 1
    if end < len(pattern) and pattern[end] == "]":
        end += 1
    end = pattern.find("]", end)
    if end == -1:
        return re.escape("["), start + 1
    body = pattern[start + 1 : end].replace("\\", "\\\\")
    if body[:1] in ("!", "^"):
        body = "^" + body[1:]
    return f"(?!/)[{body}]", end + 1


def find_config_file(
    start: Path, *, root: Path | str | None = None
) -> tuple[Path, dict, tuple[str, ...]] | None:
    """Find the nearest configuration file from ``start`` upward.

    Returns the file, its gunicorn-doctor table and that table's name as TOML
    key parts. With ``root``, the search does not leave that directory.
    """
    start = Path(os.path.abspath(start))
    stop = Path(os.path.abspath(root)) if root is not None else None
    for directory in (start, *start.parents):
        if stop is not None and not directory.is_relative_to(stop):
            break
        for name in FILE_NAMES:
            candidate = directory / name
            if not candidate.is_file():
                continue
            data = _parse(candidate)
            if name != "pyproject.toml":
                return candidate, data, ()
            tool = data.get("tool", {})
            table = tool.get("gunicorn-doctor") if isinstance(tool, dict) else None
            if table is not None:
                return candidate, table, PYPROJECT_TABLE
    return None


def _parse(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolConfigError(f"{path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolConfigError(
            f"{path} is not valid TOML: {exc}; fix the file or remove it"
        ) from None


def load_tool_config(start: Path, *, root: Path | str | None = None) -> ToolConfig:
    """Load the project configuration that applies to ``start``, or an empty one.

    ``root`` is the --root directory. The search stays inside it, and a relative
    waiver path starts from the file's directory as a deployment path.

    NOTE: without ``root``, a relative waiver path starts from the directory on
    this host, so under --root it matches no finding until the caller passes it.
    """
    found = find_config_file(Path(start), root=root)
    if found is None:
        return ToolConfig()
    path, table, table_name = found
    if not isinstance(table, dict):
        raise ToolConfigError(f"{path}: [tool.gunicorn-doctor] must be a table")
    lines = _KeyLines.scan(path.read_text(encoding="utf-8"), table_name)
    config = ToolConfig(path=str(path))
    for name, value in table.items():
        if name == "waivers":
            base = _deployment_directory(path.parent, root)
            config.waivers = _waivers(path, value, lines, base)
            continue
        where = _where(path, lines.keys.get(name))
        if name not in OPTIONS:
            known = ", ".join(sorted([*OPTIONS, "waivers"]))
            hint = ""
            if name == "tool" and not table_name:
                hint = f" (in {path.name} the options are top-level keys)"
            raise ToolConfigError(
                f"{where}: unknown option {name!r}{hint}; known options: {known}"
            )
        key = OPTIONS[name]
        config.values[key] = _validate(where, name, value)
        config.sources[key] = where
    _reject_unknown_check_names(config)
    return config


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def _deployment_directory(directory: Path, root: Path | str | None) -> str:
    """Map a directory on this host to its deployment path."""
    directory = Path(os.path.abspath(directory))
    if root is None:
        return str(directory)
    try:
        relative = directory.relative_to(os.path.abspath(root))
    except ValueError:
        return str(directory)
    return posixpath.normpath(posixpath.join("/", relative.as_posix()))


@dataclass
class _KeyLines:
    """Line numbers of the keys of one table, found by scanning the text.

    tomllib reports no positions. The scan tracks table headers and skips
    multi-line strings. Keys written as dotted keys of a parent table are
    missed and get no line.
    """

    keys: dict[str, int] = field(default_factory=dict)
    waiver_headers: list[int] = field(default_factory=list)

    HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
    KEY = re.compile(r"""\s*(["']?)([A-Za-z0-9_-]+)\1\s*=""")

    @classmethod
    def scan(cls, text: str, table: tuple[str, ...]) -> _KeyLines:
        found = cls()
        current: tuple[str, ...] | None = ()
        in_multiline = False
        for number, line in enumerate(text.splitlines(), 1):
            starts_in_string = in_multiline
            in_multiline ^= (line.count('"""') + line.count("'''")) % 2 == 1
            if starts_in_string:
                continue
            header = cls.HEADER.match(line)
            if header:
                name = _table_name(header.group(2))
                is_array = header.group(1) == "[["
                if is_array and name == (*table, "waivers"):
                    found.waiver_headers.append(number)
                current = None if is_array else name
                continue
            key = cls.KEY.match(line)
            if key and current == table:
                found.keys.setdefault(key.group(2), number)
        return found

    def waiver_line(self, index: int) -> int | None:
        """Return the line of the ``index``-th waiver (from 0)."""
        if index < len(self.waiver_headers):
            return self.waiver_headers[index]
        return self.keys.get("waivers")


def _table_name(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _validate(where: str, name: str, value: object) -> object:
    """Check one option's value and return it in the form ``check`` uses."""
    if name in ("select", "ignore"):
        return _names(where, name, value)
    if name in TIMEOUT_MINIMUMS:
        return _seconds(where, name, value)
    if name == "static":
        if not isinstance(value, bool):
            raise ToolConfigError(
                f"{where}: static = {value!r} must be true or false (unquoted)"
            )
        return value
    choices = SEVERITIES if name == "fail-on" else FORMATS
    if value not in choices:
        raise ToolConfigError(
            f"{where}: {name} = {value!r} must be one of {', '.join(choices)}"
        )
    return value


def _names(where: str, name: str, value: object) -> list[str]:
    """Accept ``"a, b"`` or ``["a", "b,c"]`` and return the names one by one."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ToolConfigError(
            f"{where}: {name} = {value!r} must be a list of check ids or areas,"
            f' e.g. {name} = ["venv", "config-daemon"]'
        )
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _seconds(where: str, name: str, value: object) -> float:
    minimum = TIMEOUT_MINIMUMS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolConfigError(
            f"{where}: {name} = {value!r} must be a number of seconds, e.g. {name} = 30"
        )
    if not math.isfinite(value) or value < minimum:
        raise ToolConfigError(
            f"{where}: {name} = {value!r} must be a number of seconds of at least"
            f" {minimum:g}"
        )
    return float(value)


def _reject_unknown_check_names(config: ToolConfig) -> None:
    """Name the file when select or ignore lists an id that no check has."""
    names = {
        key: config.values[key] for key in ("select", "ignore") if key in config.values
    }
    if not any(names.values()):
        return
    from doctor.registry import RegistryError, load_registry

    try:
        registry = load_registry()
    except RegistryError:
        return  # the command reports a registry without checks itself
    for key, values in names.items():
        unknown = registry.unknown_names(values)
        if unknown:
            raise ToolConfigError(
                f"{config.sources[key]}: {key} names unknown check id or area:"
                f" {', '.join(unknown)}; run 'gunicorn-doctor list' for the ids"
            )


def _waivers(path: Path, entries: object, lines: _KeyLines, base: str) -> list[Waiver]:
    if not isinstance(entries, list):
        raise ToolConfigError(
            f"{_where(path, lines.keys.get('waivers'))}: waivers must be an array of"
            " tables, written as [[waivers]] or [[tool.gunicorn-doctor.waivers]]"
        )
    waivers = []
    for index, entry in enumerate(entries):
        line = lines.waiver_line(index)
        waiver = _waiver(_where(path, line), index + 1, entry, base)
        waivers.append(replace(waiver, line=line))
    return waivers


def _waiver(source: str, number: int, entry: object, base: str) -> Waiver:
    where = f"{source}: waiver #{number}"
    if not isinstance(entry, dict):
        raise ToolConfigError(f"{where} must be a table")

    unknown = sorted(set(entry) - set(WAIVER_KEYS))
    if unknown:
        raise ToolConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)};"
            f" a waiver takes {', '.join(WAIVER_KEYS)}"
        )
    check = entry.get("check")
    if not isinstance(check, str) or not check.strip():
        raise ToolConfigError(f'{where} needs check = "CHECK-ID"')
    check = check.strip()
    where = f"{where} ({check})"

    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ToolConfigError(f'{where} needs reason = "why this finding is accepted"')

    path = entry.get("path")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise ToolConfigError(
            f'{where}: path = {path!r} must be a glob, e.g. path = "gunicorn.conf.py"'
        )
    expires = _expiry(where, entry.get("expires"))

    return Waiver(
        check=check,
        reason=reason.strip(),
        path=path.strip() if path else None,
        expires=expires,
        source=source,
        base=base,
    )


def _expiry(where: str, value: object) -> date | None:
    """Accept a TOML date, a date-time (its date counts) or an ISO date string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ToolConfigError(
        f"{where}: expires = {value!r} is not a date; write it like"
        " expires = 2027-01-31"
    )


def apply_waivers(
    findings: list[Finding],
    config: ToolConfig | None,
    *,
    today: date,
    known_checks: Collection[str] | None = None,
) -> list[Finding]:
    """Mark the findings that waivers cover, and report waivers that need care.

    A waiver that has expired, names no registered check, or matched nothing
    although its check ran adds a ``doctor-waiver`` finding. The registry is
    loaded only when a waiver names a check that produced no finding, unless
    ``known_checks`` gives the ids.
    """
    if config is None or not config.waivers:
        return findings
    used: set[int] = set()
    result = []
    for finding in findings:
        index = _waiver_for(finding, config.waivers, today)
        if index is not None:
            used.add(index)
            finding = replace(finding, waiver=_waiver_record(config.waivers[index]))
        result.append(finding)
    ran = {f.check for f in findings}
    looked = {f.check for f in findings if f.severity is not Severity.SKIPPED}
    missing = {w.check for w in config.waivers if w.check not in ran}
    if missing and known_checks is None:
        known_checks = _registered_check_ids()
    for index, waiver in enumerate(config.waivers):
        location = Location(config.path or "", waiver.line)
        unregistered = (
            known_checks is not None
            and waiver.check in missing
            and waiver.check not in known_checks
        )
        if unregistered:
            result.append(_unknown_check_finding(waiver, known_checks, location))
        elif waiver.is_expired(today) and waiver.check in ran:
            # Only a check that ran can fail on its lapsed waiver; a run narrowed
            # with --select must not fail on the others.
            result.append(_expired_finding(waiver, location))
        elif index not in used and waiver.check in looked:
            result.append(_unused_finding(waiver, location))
    return result


def _waiver_for(finding: Finding, waivers: list[Waiver], today: date) -> int | None:
    if finding.severity not in WAIVABLE:
        return None
    for index, waiver in enumerate(waivers):
        if not waiver.is_expired(today) and waiver.covers(finding):
            return index
    return None


def _waiver_record(waiver: Waiver) -> dict:
    return {
        "reason": waiver.reason,
        "expires": waiver.expires.isoformat() if waiver.expires else None,
        "source": waiver.source,
    }


def _registered_check_ids() -> set[str] | None:
    from doctor.registry import RegistryError, load_registry

    try:
        return set(load_registry().checks)
    except RegistryError:
        return None


def _unknown_check_finding(
    waiver: Waiver, known: Iterable[str], location: Location
) -> Finding:
    import difflib

    close = difflib.get_close_matches(waiver.check, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return Finding(
        check="doctor-waiver",
        area="doctor",
        severity=Severity.WARNING,
        title=f"the waiver for {waiver.check} names no registered check",
        detail=(
            f"No check has the id {waiver.check!r}, so the waiver covers nothing."
            f" Its reason was: {waiver.reason}"
        ),
        fix=f"{hint}Run 'gunicorn-doctor list' for the ids and correct check =",
        location=location,
    )


def _expired_finding(waiver: Waiver, location: Location) -> Finding:
    return Finding(
        check="doctor-waiver",
        area="doctor",
        severity=Severity.WARNING,
        title=f"the waiver for {waiver.check} expired after {waiver.expires}",
        detail=f"It no longer applies. Its reason was: {waiver.reason}",
        fix="Fix the finding, or move expires to a later date after a review",
        location=location,
    )


def _unused_finding(waiver: Waiver, location: Location) -> Finding:
    where = f" at {waiver.path}" if waiver.path else ""
    return Finding(
        check="doctor-waiver",
        area="doctor",
        severity=Severity.INFO,
        title=f"the waiver for {waiver.check}{where} matched no finding",
        detail=(f"Remove it if the problem is gone. Its reason was: {waiver.reason}"),
        location=location,
    )


def describe_tool_config(
    config: ToolConfig,
    defaults: dict[str, object],
    *,
    today: date,
    known_checks: Collection[str] | None = None,
) -> dict:
    """Describe each option's effective value and source, and each waiver.

    ``defaults`` maps merged-option keys to the values used without a file.
    """
    options = []
    for name, key in OPTIONS.items():
        if key in config.values:
            value, source = config.values[key], config.sources[key]
        else:
            value, source = defaults.get(key), "default"
        options.append({"name": name, "value": value, "source": source})
    waivers = [
        {
            "check": waiver.check,
            "path": waiver.path,
            "reason": waiver.reason,
            "expires": waiver.expires.isoformat() if waiver.expires else None,
            "expired": waiver.is_expired(today),
            "known_check": None
            if known_checks is None
            else waiver.check in known_checks,
            "source": waiver.source,
        }
        for waiver in config.waivers
    ]
    return {
        "path": config.path,
        "today": today.isoformat(),
        "options": options,
        "waivers": waivers,
    }


def print_tool_config(description: dict, *, plain: bool) -> None:
    """Print what :func:`describe_tool_config` returns, one value per line."""
    import sys

    from rich.console import Console

    no_color = plain or "NO_COLOR" in os.environ or not sys.stdout.isatty()
    console = Console(no_color=no_color, highlight=False, emoji=False)
    styles = {"expired": "red", "unknown check": "yellow", "active": "green"}
    for text, status in format_tool_config(description):
        # soft_wrap keeps long file paths on one line for copying.
        console.print(text, markup=False, soft_wrap=True, style=styles.get(status))


def format_tool_config(description: dict) -> list[tuple[str, str | None]]:
    """Lay out the description as lines, each with the waiver status it shows."""
    path = description["path"] or (
        "none found (no .gunicorn-doctor.toml, and no [tool.gunicorn-doctor]"
        " in a pyproject.toml)"
    )
    lines: list[tuple[str, str | None]] = [
        (f"Project configuration: {path}", None),
        ("Options on the command line of 'check' override these values.", None),
        ("", None),
    ]
    rows = [
        (row["name"], _option_text(row["value"]), row["source"])
        for row in description["options"]
    ]
    name_width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    for name, value, source in rows:
        line = f"  {name:<{name_width}}  {value:<{value_width}}  {source}"
        lines.append((line, None))
    lines.append(("", None))
    if not description["waivers"]:
        lines.append(("Waivers: none", None))
        return lines
    lines.append((f"Waivers (status as of {description['today']}):", None))
    for row in description["waivers"]:
        status = _waiver_status(row)
        lines += [
            (f"  {row['check']}: {status}", status),
            (f"    path     {row['path'] or '(any location)'}", None),
            (f"    expires  {row['expires'] or 'never'}", None),
            (f"    reason   {row['reason']}", None),
            (f"    source   {row['source']}", None),
        ]
    return lines


def _option_text(value: object) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _waiver_status(row: dict) -> str:
    if row["known_check"] is False:
        return "unknown check"
    return "expired" if row["expired"] else "active"
