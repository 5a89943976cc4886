"""gunicorn-doctor: diagnose Gunicorn deployments behind nginx and systemd.

The public API for checks, built in or third-party, is re-exported here.
"""

__version__ = "0.1.0"

from doctor.context import Context, FactUnavailable
from doctor.findings import (
    Finding,
    Location,
    Severity,
    error,
    info,
    ok,
    skipped,
    warning,
)
from doctor.registry import check

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
