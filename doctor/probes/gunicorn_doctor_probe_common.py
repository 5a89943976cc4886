"""Helpers shared by the probe scripts.

The runner in ``doctor.probes`` sends this file's source along with a probe
script to the target's interpreter and registers it as the module
``gunicorn_doctor_probe_common`` before the script runs, so everything here
runs under Python 3.8 or newer with the standard library only.
"""

import json
import os
import re
import sys
import traceback

TRACEBACK_LIMIT = 8
# The code names the runner gives the probes' sources: their frames are the
# doctor's machinery, not the user's code.
PROBE_FILENAMES = frozenset(
    ("<probe>", "<gunicorn_doctor_probe_common>", "<gunicorn_doctor_probe_import>")
)


def redirect_stdout():
    """Send fd 1 to stderr and return a duplicate of the original stdout."""
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


def guarded(function, *args, **kwargs):
    """Call ``function`` and return ``(result, None)``, or ``(None, exception)``.

    User code, gunicorn's validators and broken package metadata can raise
    anything, SystemExit and KeyboardInterrupt included, and the probe must
    still print its JSON.
    """
    try:
        return function(*args, **kwargs), None
    except BaseException as exc:
        return None, exc


def write_result(fd, result):
    """Write ``result`` as one JSON line to ``fd`` and end the process.

    ``os._exit`` skips atexit handlers and non-daemon threads that user code
    may have registered, so the probe cannot hang after its work is done.
    """
    for stream in (sys.stdout, sys.stderr):
        guarded(stream.flush)
    data = (json.dumps(result, default=safe_repr) + "\n").encode("utf-8")
    while data:
        written = os.write(fd, data)
        data = data[written:]
    os._exit(0)


def safe_repr(value):
    text, exc = guarded(repr, value)
    if exc is not None:
        return f"<{type(value).__name__} object, repr() failed: {exc!r}>"
    return text


def exception_message(exc):
    if isinstance(exc, SyntaxError):
        return exc.msg or safe_repr(exc)
    text, error = guarded(str, exc)
    return safe_repr(exc) if error is not None else text


def is_machinery_frame(filename):
    """Tell whether a frame belongs to this probe or to importlib's internals."""
    if filename in PROBE_FILENAMES or filename.startswith("<frozen importlib"):
        return True
    directory, base = os.path.split(filename)
    return base == "__init__.py" and os.path.basename(directory) == "importlib"


def user_frames(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    return [frame for frame in frames if not is_machinery_frame(frame.filename)]


def format_traceback(exc, depth=0):
    """Format ``exc`` like Python does, keeping the last 8 frames of user code."""
    parts = []
    cause = exc.__cause__
    context = None if exc.__suppress_context__ else exc.__context__
    if depth < 3 and cause is not None:
        parts.append(format_traceback(cause, depth + 1))
        parts.append(
            "\nThe above exception was the direct cause of the following exception:\n\n"
        )
    elif depth < 3 and context is not None:
        parts.append(format_traceback(context, depth + 1))
        parts.append(
            "\nDuring handling of the above exception, another exception occurred:\n\n"
        )
    frames = user_frames(exc)[-TRACEBACK_LIMIT:]
    if frames:
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.StackSummary.from_list(frames).format())
    parts.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(parts)


def describe(exc):
    return f"{type(exc).__name__}: {exc}"


def canonical_name(name):
    """Normalize a distribution name as PEP 503 does."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_metadata_headers(path):
    """Return the Name and Version headers of a METADATA or PKG-INFO file."""
    name = version = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
    return name, version


def installed_packages():
    """Map canonical distribution names to versions.

    Reads the ``*.dist-info/METADATA`` and ``*.egg-info/PKG-INFO`` files on
    ``sys.path``, which is what ``importlib.metadata`` reads, without importing
    it: that import alone costs about 50 ms. When a name is installed twice on
    sys.path, the first one wins, as it does for imports. Distributions with
    unreadable metadata are skipped.
    """
    packages = {}
    for entry in sys.path:
        names, exc = guarded(os.listdir, entry or ".")
        if exc is not None:
            continue
        for directory in sorted(names):
            if directory.endswith(".dist-info"):
                metadata = os.path.join(entry, directory, "METADATA")
            elif directory.endswith(".egg-info"):
                metadata = os.path.join(entry, directory, "PKG-INFO")
            else:
                continue
            headers, exc = guarded(read_metadata_headers, metadata)
            if exc is None and headers[0] and headers[1]:
                packages.setdefault(canonical_name(headers[0]), headers[1])
    return packages


def describe_interpreter():
    """Describe the running interpreter, its packages and its gunicorn."""
    import importlib
    import platform

    result = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "packages": {},
        "packages_error": None,
        "gunicorn_version": None,
        "gunicorn_import_error": None,
        "gunicorn_file": None,
    }
    packages, exc = guarded(installed_packages)
    if exc is None:
        result["packages"] = packages
    else:
        result["packages_error"] = describe(exc)
    gunicorn, exc = guarded(importlib.import_module, "gunicorn")
    if exc is not None:
        result["gunicorn_import_error"] = describe(exc)
        return result
    result["gunicorn_version"] = getattr(gunicorn, "__version__", None)
    result["gunicorn_file"] = getattr(gunicorn, "__file__", None)
    # The gunicorn script starts from this module, so importing it catches a
    # gunicorn that imports but cannot run, such as 20.x without pkg_resources.
    _, exc = guarded(importlib.import_module, "gunicorn.app.wsgiapp")
    if exc is not None:
        result["gunicorn_import_error"] = describe(exc)
    return result
