"""gunicorn-doctor: diagnose Gunicorn deployments behind nginx and systemd.

The public API for checks, built in or third-party, is re-exported here. The
names are loaded on first access, so that ``import doctor`` stays cheap for
the commands that need none of them.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Context": "doctor.context",
    "FactUnavailable": "doctor.context",
    "Finding": "doctor.findings",
    "Location": "doctor.findings",
    "Severity": "doctor.findings",
    "error": "doctor.findings",
    "info": "doctor.findings",
    "ok": "doctor.findings",
    "skipped": "doctor.findings",
    "warning": "doctor.findings",
    "check": "doctor.registry",
}

__all__ = [
    "Context",
    "FactUnavailable",
    "Finding",
    "Location",
    "Severity",
    "__version__",
    "check",
    "error",
    "info",
    "ok",
    "skipped",
    "warning",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'doctor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
