"""Time windows as users write them: ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"``."""

from __future__ import annotations

import re

from .errors import InvalidArgument

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_window(window: str | int | float) -> float:
    """Seconds in a window; numbers are seconds already."""
    if isinstance(window, bool):
        raise InvalidArgument(f"invalid window {window!r}", hint='use e.g. "5m", "1h", "1d"')
    if isinstance(window, (int, float)):
        seconds = float(window)
    else:
        match = _WINDOW.match(str(window))
        if not match:
            raise InvalidArgument(
                f"invalid window {window!r}", hint='use a number and a unit: "30s", "5m", "1h", "1d", "2w"'
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidArgument(f"the window must be positive, got {window!r}")
    return seconds
