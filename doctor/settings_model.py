"""Effective Gunicorn settings and where each value came from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from doctor.findings import Location

SOURCE_KINDS = ("default", "config", "env", "cli")


class SettingSource(NamedTuple):
    kind: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.kind == "config":
            if self.path and self.line:
                return f"{self.path}:{self.line}"
            return self.path or "config file"
        return {
            "default": "default",
            "env": "GUNICORN_CMD_ARGS",
            "cli": "command line",
        }.get(self.kind, self.kind)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "line": self.line}


@dataclass
class EffectiveSettings:
    """Settings as the target's gunicorn resolves them, or a static estimate."""

    values: dict[str, Any]
    sources: dict[str, SettingSource]
    estimated: bool
    gunicorn_version: str | None
    known: frozenset[str]
    config_file: str | None = None
    config_origin: str | None = None
    unknown_names: list[tuple[str, int | None]] = field(default_factory=list)
    non_literal: dict[str, str] = field(default_factory=dict)
    app_uri: str | None = None
    worker_class_runs: str | None = None
    worker_class_error: str | None = None
    error: dict | None = None
    cli_flags: dict[str, list[str]] = field(default_factory=dict)
    estimate_reason: str | None = None
    # Set when the settings probe ran the config but never reported: it timed
    # out or the process exited. gunicorn would then hang or exit at start too.
    load_failure: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def source(self, name: str) -> SettingSource:
        return self.sources.get(name, SettingSource("default"))

    def location(self, name: str) -> Location | None:
        """Return the config-file line that sets ``name``, if a file sets it."""
        src = self.source(name)
        if src.kind == "config" and src.path:
            return Location(src.path, src.line)
        return None

    @property
    def control_socket_address(self) -> str | None:
        """Return the address of gunicorn's own control socket, if it has one.

        gunicorn 26 and later listen on it besides the binds; it serves no
        requests, so it is left out wherever listeners are compared with binds.
        """
        path = self.values.get("control_socket")
        if not path or self.values.get("control_socket_disable"):
            return None
        return f"unix:{path}"

    def describe(self, name: str) -> str:
        """Render ``name = value (source)`` for evidence lines."""
        value = self.non_literal.get(name, self.values.get(name))
        return f"{name} = {value!r} ({self.source(name)})"

    def to_dict(self) -> dict:
        return {
            "gunicorn_version": self.gunicorn_version,
            "estimated": self.estimated,
            "config_file": self.config_file,
            "app_uri": self.app_uri,
            "worker_class_runs": self.worker_class_runs,
            "settings": {
                name: {
                    "value": _jsonable(self.values.get(name)),
                    "source": self.source(name).to_dict(),
                    **(
                        {"expression": self.non_literal[name]}
                        if name in self.non_literal
                        else {}
                    ),
                }
                for name in sorted(self.values)
            },
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


@cache
def settings_table() -> dict:
    """Return the settings table of the newest gunicorn this doctor knows."""
    path = Path(__file__).with_name("data") / "gunicorn_settings.json"
    return json.loads(path.read_text(encoding="utf-8"))
