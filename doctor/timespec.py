"""Parse the time-window and size values the command line takes.

Kept apart from the log reader so that parsing ``--since`` does not import
it and its regular expressions on the way to the first probe.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Parse a byte count such as ``512k``, ``4m`` or ``1g``. Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512k, 4m or 1g")
    return int(match[1]) * _SIZE_UNITS[match[2]]


_DURATION = re.compile(r"(\d+)\s*([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Parse the start of a time window into an aware datetime.

    Accepts a duration back from ``now`` (``90s``, ``30m``, ``2h``, ``1d``) or
    an ISO 8601 date and time (``2026-12-04 15:00``), local time when it has
    no zone. Raises ValueError naming the value and the accepted forms.
    """
    value = text.strip()
    try:
        match = _DURATION.fullmatch(value)
        if match:
            amount = timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
            return (now or datetime.now().astimezone()) - amount
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise ValueError(
            f"invalid time {text!r}: give a duration such as 30m, 2h or 1d, or a"
            " date and time such as '2026-12-04 15:00'"
        ) from None
    return parsed if parsed.tzinfo else parsed.astimezone()
