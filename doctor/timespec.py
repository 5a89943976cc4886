"""Parse the time and size values the command line takes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Parse ``--since``: a duration such as ``90s``, ``30m``, ``1h``, ``2d``,
    or a date and time such as ``2026-12-04 15:00``. Raises ValueError."""
    now = now or datetime.now()
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is not a duration (90s, 30m, 1h, 2d) or a date"
            " and time (2026-12-04 15:00)"
        ) from None


def parse_size(text: str) -> int:
    """Parse a byte count such as ``512k``, ``4m`` or ``1g``. Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512k, 4m or 1g")
    return int(match[1]) * _SIZE_UNITS[match[2]]
