"""Parse the size values the command line takes."""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Parse a byte count such as ``512k``, ``4m`` or ``1g``. Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512k, 4m or 1g")
    return int(match[1]) * _SIZE_UNITS[match[2]]
