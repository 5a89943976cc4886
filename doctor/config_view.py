"""Terminal view of the effective settings for ``gunicorn-doctor config``."""

from __future__ import annotations

import os
import sys

from doctor.redact import redact_text
from doctor.settings_model import EffectiveSettings


def print_settings(settings: EffectiveSettings, *, show_all: bool, plain: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    no_color = plain or "NO_COLOR" in os.environ or not sys.stdout.isatty()
    # Piped output keeps whole lines: a cut file:line would defeat the command.
    width = None if sys.stdout.isatty() else 400
    console = Console(no_color=no_color, highlight=False, emoji=False, width=width)
    if settings.estimated:
        console.print(
            f"Static estimate, not resolved by gunicorn: {settings.estimate_reason}",
            markup=False,
        )
    else:
        console.print(f"Resolved by gunicorn {settings.gunicorn_version}", markup=False)
    if settings.config_file:
        console.print(f"Config file: {settings.config_file}", markup=False)
    if settings.error:
        error = settings.error
        where = error.get("path") or ""
        if error.get("line"):
            where += f":{error['line']}"
        console.print(
            f"Error ({error.get('stage')}): {error.get('type')}: {error.get('message')}"
            + (f" at {where}" if where else ""),
            markup=False,
        )
    table = Table(box=None, show_edge=False, pad_edge=False)
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("source")
    for name in sorted(settings.values):
        source = settings.source(name)
        if source.kind == "default" and not show_all:
            continue
        if name in settings.non_literal and settings.estimated:
            value = f"{settings.non_literal[name]}  (expression, not evaluated)"
        else:
            value = repr(settings.values[name])
        table.add_row(name, redact_text(value), str(source))
    console.print(table)
    if not show_all:
        console.print("Settings left at their default are hidden; --all shows them.")
