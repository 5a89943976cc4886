"""Regenerate doctor/data/gunicorn_settings.json from the installed gunicorn.

The static reader uses this table (names, command-line flags, defaults) when
it cannot ask the target's own gunicorn. Run it with the newest gunicorn:
``python doctor/data/generate_settings_table.py``.
"""

import json
import sys
from pathlib import Path

import gunicorn
from gunicorn.config import KNOWN_SETTINGS

OUT = Path(__file__).resolve().parent / "gunicorn_settings.json"


def jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def main() -> int:
    settings = {}
    for setting in KNOWN_SETTINGS:
        validator = getattr(setting, "validator", None)
        settings[setting.name] = {
            "section": setting.section,
            "cli": list(setting.cli or []),
            "action": setting.action,
            "nargs": setting.nargs,
            "const": jsonable(setting.const),
            "default": jsonable(setting.default),
            "validator": getattr(validator, "__name__", None),
            "short": (setting.short or "").strip(),
        }
    table = {"gunicorn_version": gunicorn.__version__, "settings": settings}
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(settings)} settings of gunicorn {gunicorn.__version__} to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
