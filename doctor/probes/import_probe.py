"""Import a WSGI app the way Gunicorn would and diagnose why it fails.

Usage: ``python import_probe.py --app SPEC [--pythonpath DIR[,DIR...]]``, run in
the service's working directory with the deployment's interpreter.

``sys.path`` is prepared as gunicorn prepares it (the working directory, then
each ``--pythonpath`` entry, in front), the app module is imported once, and
the object named by SPEC is loaded with the installed
``gunicorn.util.import_app``. When gunicorn is not installed, an equivalent
loader with the same messages is used. A failure is classified into one
``status`` with the evidence needed to fix it, and the result is printed as
one JSON line.

``status`` is one of ``ok``, ``bad_spec``, ``module_not_found``,
``module_not_importable``, ``attribute_not_found``, ``not_callable``,
``factory_failed``, ``import_error`` or ``gunicorn_rejects_spec``, and
``probe_failed`` when the probe itself breaks. Besides the documented keys,
``object_exists`` records for ``gunicorn_rejects_spec`` whether the object
path resolves, ``gunicorn_error`` why an installed gunicorn cannot load its
own modules, and ``sys_path`` the search path used.

This script runs under the deployment's interpreter (Python 3.8 or newer), so it
uses the standard library and the installed gunicorn only. User code may write
to stdout, so file descriptor 1 is redirected to stderr and the single JSON
line goes to the original stdout.
"""

import argparse
import ast
import importlib
import importlib.machinery
import inspect
import os
import platform
import sys
import traceback

from gunicorn_doctor_probe_common import (  # sent along by the runner
    exception_message,
    format_traceback,
    guarded,
    redirect_stdout,
    user_frames,
    write_result,
)

FRAME_LIMIT = 5
SEARCH_DEPTH = 3
MAX_FOUND = 20
MAX_CANDIDATES = 20
SKIPPED_DIRS = {"venv", ".venv", "node_modules", ".git", "__pycache__"}
FACTORY_PREFIXES = ("create_", "make_", "build_", "get_app", "get_wsgi")


class AppImportFailure(Exception):
    """Stand-in for ``gunicorn.errors.AppImportError`` without gunicorn."""


def gunicorn_message(exc):
    """Return the text gunicorn prints for ``exc`` when the app fails to load.

    The arbiter prints an ``AppImportError`` as its message alone, and logs
    any other exception as a traceback whose last line is "Type: message".
    """
    if type(exc).__name__ in ("AppImportError", "AppImportFailure"):
        return exception_message(exc)
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__


def relative_path(path, cwd):
    try:
        relative = os.path.relpath(path, cwd)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def describe_exception(exc, cwd):
    frames = [
        f"{relative_path(frame.filename, cwd)}:{frame.lineno} in {frame.name}"
        for frame in user_frames(exc)
    ]
    if isinstance(exc, SyntaxError) and exc.filename:
        frames.append(f"{relative_path(exc.filename, cwd)}:{exc.lineno}")
    return {
        "type": type(exc).__name__,
        "message": exception_message(exc),
        "frames": frames[-FRAME_LIMIT:],
        "traceback": format_traceback(exc),
    }


def type_path(value):
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def gunicorn_cwd():
    """Return the working directory as ``gunicorn.util.getcwd`` computes it."""
    cwd = os.getcwd()
    pwd = os.environ.get("PWD")
    if not pwd:
        return cwd
    try:
        pwd_stat = os.stat(pwd)
        cwd_stat = os.stat(cwd)
    except OSError:
        return cwd
    if (pwd_stat.st_ino, pwd_stat.st_dev) == (cwd_stat.st_ino, cwd_stat.st_dev):
        return pwd
    return cwd


def prepare_sys_path(cwd, pythonpath):
    """Insert the working directory and pythonpath entries as gunicorn does.

    ``Application.chdir`` inserts the working directory at the front, then
    ``Application.run`` inserts each ``--pythonpath`` entry at the front.
    """
    if sys.path and sys.path[0] == "":
        # Started with ``python -c``, but ``bin/gunicorn`` has its own directory here.
        sys.path[0] = os.path.dirname(os.path.abspath(sys.executable))
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    for entry in pythonpath:
        path = os.path.abspath(entry)
        if path not in sys.path:
            sys.path.insert(0, path)


def split_spec(spec):
    parts = spec.split(":", 1)
    if len(parts) == 1:
        return spec, "application"
    return parts[0], parts[1]


def analyse_object(obj):
    """Classify the object part of SPEC as gunicorn's ``import_app`` parses it.

    Returns a dict with ``kind`` "name", "call", "attribute" (a dotted path,
    which gunicorn rejects), "call_attribute" (a call of a dotted path, also
    rejected) or "invalid", plus ``path`` (the names to resolve) and, for
    calls, ``args`` and ``kwargs``.
    """
    try:
        expression = ast.parse(obj, mode="eval").body
    except SyntaxError:
        return {"kind": "invalid"}
    if isinstance(expression, ast.Name):
        return {"kind": "name", "path": [expression.id]}
    if isinstance(expression, ast.Attribute):
        path = attribute_path(expression)
        return {"kind": "attribute", "path": path} if path else {"kind": "invalid"}
    if isinstance(expression, ast.Call):
        if isinstance(expression.func, ast.Name):
            path = [expression.func.id]
            kind = "call"
        else:
            path = attribute_path(expression.func)
            if not path:
                return {"kind": "invalid"}
            kind = "call_attribute"
        try:
            args = [ast.literal_eval(arg) for arg in expression.args]
            kwargs = {
                keyword.arg: ast.literal_eval(keyword.value)
                for keyword in expression.keywords
            }
        except ValueError:
            return {"kind": "invalid_arguments", "path": path}
        return {"kind": kind, "path": path, "args": args, "kwargs": kwargs}
    return {"kind": "invalid"}


def attribute_path(node):
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    names.append(node.id)
    return list(reversed(names))


def resolve(module, path):
    """Follow the attribute ``path`` from ``module`` and return (found, value)."""
    value = module
    for name in path:
        value, exc = guarded(getattr, value, name)
        if exc is not None:
            return False, None
    return True, value


def own_import_app(module_name, obj, module):
    """Load the app as ``gunicorn.util.import_app`` 20.0.1-27.x does.

    Used when gunicorn is missing. The module is already imported, and the
    messages match gunicorn's.
    """
    analysis = analyse_object(obj)
    if analysis["kind"] == "invalid_arguments":
        raise AppImportFailure(f"Failed to parse arguments as literal values: {obj!r}")
    if analysis["kind"] == "call_attribute":
        raise AppImportFailure(f"Function reference must be a simple name: {obj!r}")
    if analysis["kind"] not in ("name", "call"):
        raise AppImportFailure(
            f"Failed to parse {obj!r} as an attribute name or function call."
        )
    name = analysis["path"][0]
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppImportFailure(f"Failed to find attribute {name!r} in {module_name!r}.")
    if analysis["kind"] == "call":
        try:
            app = app(*analysis["args"], **analysis["kwargs"])
        except TypeError as exc:
            if called_with_wrong_args(app, exc):
                raise AppImportFailure(
                    "".join(traceback.format_exception_only(TypeError, exc)).strip()
                )
            raise
    if app is None:
        raise AppImportFailure(f"Failed to find application object: {obj!r}")
    if not callable(app):
        raise AppImportFailure("Application object must be callable.")
    return app


def called_with_wrong_args(function, exc):
    """Tell whether a TypeError came from the call itself, not from inside it."""
    code = getattr(function, "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return False
        tb = tb.tb_next
    return True


def spec_origin(spec):
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
        return spec.origin
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return locations[0]
    return spec.origin


def module_origin(module):
    path = getattr(module, "__file__", None)
    if path:
        return os.path.abspath(path)
    spec = getattr(module, "__spec__", None)
    return spec_origin(spec) if spec is not None else None


def find_spec_on(name, entries):
    """Find top-level module ``name`` on ``entries`` without executing code."""
    spec, exc = guarded(importlib.machinery.PathFinder.find_spec, name, entries)
    return spec if exc is None else None


def locate_module(module_name):
    """Return the file ``module_name`` would load from, without executing code."""
    entries = [entry for entry in sys.path if entry]
    parts = module_name.split(".")
    spec = None
    for index in range(len(parts)):
        spec = find_spec_on(".".join(parts[: index + 1]), entries)
        if spec is None:
            return None
        entries = list(spec.submodule_search_locations or [])
    return spec_origin(spec)


def local_module_files(module_name, directories):
    """List files under ``directories`` that provide ``module_name`` directly."""
    parts = module_name.split(".")
    found = []
    for directory in directories:
        base = os.path.join(directory, *parts)
        for candidate in (base + ".py", os.path.join(base, "__init__.py"), base):
            if os.path.exists(candidate):
                found.append(os.path.abspath(candidate))
                break
    return found


def search_tree(cwd, module_name):
    """Find files under ``cwd`` (depth <= 3) that would provide ``module_name``.

    A hit in a subdirectory means the service runs from the wrong directory
    or lacks a ``--pythonpath`` entry.
    """
    parts = module_name.split(".")
    suffixes = (
        os.path.join(*parts) + ".py",
        os.path.join(*(parts + ["__init__.py"])),
    )
    found = []
    for root, dirs, files in os.walk(cwd):
        relative_root = os.path.relpath(root, cwd)
        depth = 0 if relative_root == "." else relative_root.count(os.sep) + 1
        dirs[:] = sorted(
            d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")
        )
        if depth >= SEARCH_DEPTH:
            dirs[:] = []
        if depth == 0:
            continue
        for suffix in suffixes:
            if os.path.isfile(os.path.join(root, suffix)):
                found.append(os.path.normpath(os.path.join(relative_root, suffix)))
        if len(found) >= MAX_FOUND:
            break
    return sorted(set(found))[:MAX_FOUND]


def looks_like_wsgi(value):
    if hasattr(value, "wsgi_app") or "WSGI" in type(value).__name__:
        return True
    signature, exc = guarded(inspect.signature, value)
    if exc is not None:
        return False
    parameters = list(signature.parameters)
    return "environ" in parameters and "start_response" in parameters


def candidate_names(module):
    """List callables the module defines, WSGI-looking ones first."""
    module_name = getattr(module, "__name__", None)
    ranked = []
    for name, value in list(vars(module).items()):
        if name.startswith("_") or inspect.ismodule(value) or not callable(value):
            continue
        defined_here = getattr(value, "__module__", None) == module_name
        if (inspect.isroutine(value) or inspect.isclass(value)) and not defined_here:
            continue
        if inspect.isclass(value):
            rank = 3
        elif looks_like_wsgi(value):
            rank = 0
        elif name.startswith(FACTORY_PREFIXES) or "factory" in name:
            rank = 1
        else:
            rank = 2
        ranked.append((rank, name))
    ranked.sort(key=lambda item: item[0])
    return [name for _, name in ranked][:MAX_CANDIDATES]


class ImportProbe:
    """State of one diagnosed app import."""

    def __init__(self, spec, pythonpath):
        self.spec = spec
        self.pythonpath = [entry for entry in pythonpath if entry]
        self.cwd = gunicorn_cwd()
        self.module_name, self.obj = split_spec(spec)
        self.gunicorn_import_app = None
        self.gunicorn_error_type = None
        self.loader_supports_calls = True
        self.result = {
            "probe": "import",
            "python": platform.python_version(),
            "gunicorn_version": None,
            "spec": spec,
            "module": self.module_name,
            "object": self.obj,
            "status": None,
            "message": None,
            "missing_module": None,
            "module_file": None,
            "found_elsewhere": [],
            "shadowed_by": None,
            "candidates": [],
            "exception": None,
            "app_type": None,
            "object_exists": None,
            "gunicorn_error": None,
            "cwd": self.cwd,
            "sys_path": [],
        }

    def fail(self, status, message, exc=None):
        self.result["status"] = status
        self.result["message"] = message
        if exc is not None:
            self.result["exception"] = describe_exception(exc, self.cwd)

    def run(self):
        self.load_gunicorn()
        prepare_sys_path(self.cwd, self.pythonpath)
        self.result["sys_path"] = list(sys.path)
        module = self.import_module()
        if module is None:
            return self.result
        self.result["module_file"] = module_origin(module)
        self.check_module_shadowed(module)
        self.load_object(module)
        return self.result

    def load_gunicorn(self):
        gunicorn, exc = guarded(importlib.import_module, "gunicorn")
        if exc is not None:
            return
        self.result["gunicorn_version"] = getattr(gunicorn, "__version__", None)
        errors, exc = guarded(importlib.import_module, "gunicorn.errors")
        if exc is None:
            util, exc = guarded(importlib.import_module, "gunicorn.util")
        if exc is not None:
            # Gunicorn itself cannot start, as gunicorn 20 cannot without
            # pkg_resources. The equivalent loader still diagnoses the app.
            self.result["gunicorn_error"] = gunicorn_message(exc)
            return
        self.gunicorn_import_app = util.import_app
        self.gunicorn_error_type = errors.AppImportError
        # Factory calls such as "app:create_app()" arrived in gunicorn 20.0.1
        # together with this helper. 20.0.0 looks the whole text up as a name.
        self.loader_supports_calls = hasattr(util, "_called_with_wrong_args")

    def local_directories(self):
        return [os.path.abspath(entry) for entry in self.pythonpath] + [self.cwd]

    def import_module(self):
        """Import the app module once, or classify the failure and return None."""
        if not self.module_name or self.module_name.startswith("."):
            self.fail(
                "bad_spec",
                f"{self.module_name!r} is not an absolute module name; use "
                "MODULE:OBJECT, such as 'app:app'",
            )
            return None
        module, exc = guarded(importlib.import_module, self.module_name)
        if exc is not None:
            self.classify_import_failure(exc)
            return None
        return module

    def classify_import_failure(self, exc):
        message = gunicorn_message(exc)
        missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        local_files = local_module_files(self.module_name, self.local_directories())

        if self.module_name.endswith(".py") and os.path.exists(self.module_name):
            stem = self.module_name.rsplit(".", 1)[0]
            self.fail(
                "bad_spec",
                "ImportError: Failed to find application, did you mean "
                f"'{stem}:{self.obj}'?",
                exc,
            )
            self.result["module_file"] = os.path.abspath(self.module_name)
            return

        if isinstance(exc, ModuleNotFoundError) and self.is_app_module(missing):
            self.result["missing_module"] = missing
            if local_files:
                self.result["module_file"] = local_files[0]
                self.result["shadowed_by"] = self.find_shadowing_package()
                self.fail("module_not_importable", message, exc)
                return
            self.result["found_elsewhere"] = search_tree(self.cwd, self.module_name)
            self.fail("module_not_found", message, exc)
            return

        if local_files and self.is_error_in_module_file(exc, local_files[0]):
            self.result["module_file"] = local_files[0]
            self.fail("module_not_importable", message, exc)
            return

        if isinstance(exc, ModuleNotFoundError):
            self.result["missing_module"] = missing
        if local_files:
            self.result["module_file"] = local_files[0]
        else:
            self.result["module_file"] = locate_module(self.module_name)
        self.result["shadowed_by"] = self.find_shadowed_dependency(exc)
        self.fail("import_error", message, exc)

    def is_app_module(self, missing):
        """Tell whether ``missing`` is the app module or one of its packages."""
        if not missing:
            return False
        return self.module_name == missing or self.module_name.startswith(missing + ".")

    def is_error_in_module_file(self, exc, path):
        """Tell whether reading the module file itself failed (permissions)."""
        if not isinstance(exc, OSError) or exc.filename is None:
            return False
        failed = os.path.abspath(os.fsdecode(exc.filename))
        return failed == path or path.startswith(failed + os.sep)

    def find_shadowing_package(self):
        """Find the package that wins over a local module of the same name."""
        parts = self.module_name.split(".")
        for index in range(len(parts)):
            name = ".".join(parts[: index + 1])
            module = sys.modules.get(name)
            if module is None:
                continue
            origin = module_origin(module)
            if origin and not self.is_local(origin):
                return origin
        spec = find_spec_on(parts[0], sys.path)
        origin = spec_origin(spec)
        if origin and not self.is_local(origin):
            return origin
        return None

    def is_local(self, path):
        path = os.path.abspath(path)
        for directory in self.local_directories():
            if path == directory or path.startswith(directory.rstrip(os.sep) + os.sep):
                return True
        return False

    def find_shadowed_dependency(self, exc):
        """Find a local module that hides an installed one of the same name.

        Looks at top-level modules loaded from the working directory or the
        pythonpath entries (other than the app's own package) that also exist
        further down ``sys.path``, such as a stray ``flask.py`` next to the app.
        """
        app_top = self.module_name.split(".")[0]
        suspects = []
        name = getattr(exc, "name", None)
        if name:
            suspects.append(name.split(".")[0])
        for module_name in list(sys.modules):
            if "." not in module_name and module_name not in suspects:
                suspects.append(module_name)
        local = self.local_directories()
        others = [
            entry for entry in sys.path if entry and os.path.abspath(entry) not in local
        ]
        for top in suspects:
            if top == app_top:
                continue
            module = sys.modules.get(top)
            origin = module_origin(module) if module is not None else None
            if origin is None:
                spec = find_spec_on(top, [d for d in sys.path if d])
                origin = spec_origin(spec)
            if not origin or not self.is_local(origin):
                continue
            if find_spec_on(top, others) is not None:
                return origin
        return None

    def check_module_shadowed(self, module):
        """Flag an app module imported from outside while a local one exists.

        This happens when the name is already imported at startup (a module
        named ``types`` or ``site``) or is provided by a package earlier on
        ``sys.path``.
        """
        origin = module_origin(module)
        if origin is None or self.is_local(origin):
            return
        local_files = local_module_files(self.module_name, self.local_directories())
        if local_files:
            self.result["shadowed_by"] = origin
            self.result["module_file"] = local_files[0]

    def load_object(self, module):
        analysis = analyse_object(self.obj)
        kind = analysis["kind"]
        if kind in ("invalid", "invalid_arguments"):
            self.fail("bad_spec", self.loader_message(module))
            return
        found, value = resolve(module, analysis["path"])
        if kind in ("attribute", "call_attribute") or (
            kind == "call" and not self.loader_supports_calls
        ):
            self.load_rejected_spec(module, found, value)
            return
        if not found:
            if self.result["shadowed_by"]:
                status = "module_not_importable"
            else:
                status = "attribute_not_found"
            self.fail(status, self.loader_message(module))
            if status == "attribute_not_found":
                self.result["candidates"] = candidate_names(module)
            return
        self.load_with_gunicorn(module, kind)

    def loader_message(self, module):
        """Return the message of the loader for a spec known to fail early."""
        _, exc = guarded(self.import_app, module)
        return gunicorn_message(exc) if exc is not None else None

    def import_app(self, module):
        if self.gunicorn_import_app is not None:
            return self.gunicorn_import_app(self.spec)
        return own_import_app(self.module_name, self.obj, module)

    def is_loader_error(self, exc):
        if isinstance(exc, AppImportFailure):
            return True
        return self.gunicorn_error_type is not None and isinstance(
            exc, self.gunicorn_error_type
        )

    def load_rejected_spec(self, module, found, value):
        """Handle a spec the installed gunicorn cannot load, by resolving it here.

        Gunicorn 20.0.1 and later reject ``module:obj.attr``, and 20.0.0 also
        rejects factory calls. The object itself may still exist.
        """
        app, exc = guarded(self.import_app, module)
        if exc is None:
            # A gunicorn that accepts dotted paths loads it: report success.
            self.result["status"] = "ok"
            self.result["app_type"] = type_path(app)
            self.result["object_exists"] = True
            return
        self.fail("gunicorn_rejects_spec", gunicorn_message(exc))
        self.result["object_exists"] = found
        if found:
            self.result["app_type"] = type_path(value)
        else:
            self.result["candidates"] = candidate_names(module)

    def load_with_gunicorn(self, module, kind):
        app, exc = guarded(self.import_app, module)
        if exc is not None:
            self.classify_load_failure(module, kind, exc)
            return
        self.result["status"] = "ok"
        self.result["app_type"] = type_path(app)

    def classify_load_failure(self, module, kind, exc):
        message = gunicorn_message(exc)
        if not self.is_loader_error(exc):
            # Raised by the factory call (or a module ``__getattr__``).
            status = "factory_failed" if kind == "call" else "import_error"
            self.fail(status, message, exc)
            return
        if "must be callable" in message:
            status = "not_callable"
        elif "Failed to find application object" in message:
            status = "factory_failed" if kind == "call" else "not_callable"
        elif kind == "call":
            # The factory rejected the arguments.
            status = "factory_failed"
        else:
            status = "not_callable"
        self.fail(status, message, exc if kind == "call" else None)
        if status == "not_callable":
            self.result["candidates"] = candidate_names(module)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="import_probe")
    parser.add_argument("--app", required=True)
    parser.add_argument("--pythonpath", default="")
    return parser.parse_args(argv)


def run(argv):
    arguments = parse_arguments(argv)
    return ImportProbe(arguments.app, arguments.pythonpath.split(",")).run()


def main():
    saved_stdout = redirect_stdout()
    result, exc = guarded(run, sys.argv[1:])
    if exc is not None:
        result = {
            "probe": "import",
            "python": platform.python_version(),
            "status": "probe_failed",
            "message": gunicorn_message(exc),
            "exception": describe_exception(exc, os.getcwd()),
        }
    write_result(saved_stdout, result)


if __name__ == "__main__":
    main()
