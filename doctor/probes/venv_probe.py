"""Describe the running interpreter and its installed packages as JSON.

Usage: ``VENV/bin/python venv_probe.py`` (no arguments). Prints one JSON line
with the Python version, ``sys.executable``, ``sys.prefix`` and
``sys.base_prefix``, every installed distribution by canonical name, and
whether gunicorn and its ``gunicorn.app.wsgiapp`` entry module import.

This script runs under the deployment's interpreter (Python 3.8 or newer), so it
uses the standard library only; the runner prepends ``common.py`` to it, which
defines ``describe_interpreter`` and the output helpers. Importing gunicorn or reading package metadata
could print, so file descriptor 1 is redirected to stderr and the JSON line goes
to the original stdout.
"""

import os
import sys

from gunicorn_doctor_probe_common import (  # sent along by the runner
    describe,
    describe_interpreter,
    guarded,
    redirect_stdout,
    write_result,
)


def probe():
    return dict(describe_interpreter(), probe="venv")


def main():
    saved_stdout = redirect_stdout()
    if sys.path and sys.path[0] == "":
        # Started with ``python -c``: keep the working directory from shadowing
        # installed packages, as it would not for ``bin/gunicorn``.
        sys.path[0] = os.path.dirname(os.path.abspath(sys.executable))
    result, exc = guarded(probe)
    if exc is not None:
        result = {"probe": "venv", "error": describe(exc)}
    write_result(saved_stdout, result)


if __name__ == "__main__":
    main()
