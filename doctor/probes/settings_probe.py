"""Load a Gunicorn configuration the way ``gunicorn`` does and print it as JSON.

Usage: ``python settings_probe.py [--import-app --] GUNICORN_ARG...`` with the
arguments the service passes to the ``gunicorn`` binary, run in the service's
working directory and environment (including ``GUNICORN_CMD_ARGS``).

With ``--import-app`` the probe then imports the app in the same process, as a
gunicorn worker would after loading this configuration: in the ``chdir``
directory, with ``pythonpath`` and ``raw_env`` applied and whatever the config
file changed in the process still in effect. The import probe's code must be
available as the module ``gunicorn_doctor_probe_import`` (the runner sends it
along); its result goes under the key ``import``.

The steps follow ``gunicorn.app.base.Application.load_config`` and
``gunicorn.app.wsgiapp.WSGIApplication`` from gunicorn 20.0 to 27.x: parse the
command line, take the app URI from it, parse ``GUNICORN_CMD_ARGS``, execute the
config file, then apply the config file, environment and command-line values in
that order. Each step is instrumented to record where every setting's final
value came from, and every failure is reported in the JSON instead of exiting.

This script runs under the deployment's interpreter (Python 3.8 or newer), so it
uses the standard library and the installed gunicorn only. User code may write
to stdout, so file descriptor 1 is redirected to stderr and the single JSON
line goes to the original stdout.
"""

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import platform
import sys
import types

from gunicorn_doctor_probe_common import (  # sent along by the runner
    describe,
    describe_interpreter,
    exception_message,
    format_traceback,
    guarded,
    redirect_stdout,
    safe_repr,
    user_frames,
    write_result,
)

USAGE = "%(prog)s [OPTIONS] [APP_MODULE]"
SYNC_NAMES = ("sync",)
THREAD_WORKER = "gunicorn.workers.gthread.ThreadWorker"


class StageError(Exception):
    """A failure at one loading stage, carried to the top as a JSON error."""

    def __init__(self, error):
        super().__init__(error["message"])
        self.error = error


class ArgparseExit(Exception):
    """Raised in place of argparse's ``sys.exit`` on errors, --help or --version."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def make_error(stage, exc, path=None, line=None, **extra):
    if isinstance(exc, SyntaxError) and exc.filename:
        path = absolute_filename(exc.filename)
        line = exc.lineno
    error = {
        "stage": stage,
        "type": type(exc).__name__,
        "message": exception_message(exc),
        "path": path,
        "line": line,
        "traceback": format_traceback(exc),
    }
    error.update(extra)
    return error


def frame_in_file(exc, path):
    """Return (path, line) of the innermost traceback frame in ``path``.

    Falls back to the innermost frame of user code when no frame ran in
    ``path``, and to ``(path, None)`` when there is none.
    """
    wanted = os.path.realpath(path) if path else None
    frames = user_frames(exc)
    chosen = frames[-1] if frames else None
    for frame in frames:
        if wanted and os.path.realpath(frame.filename) == wanted:
            chosen = frame
    if chosen is None:
        return path, None
    return absolute_filename(chosen.filename), chosen.lineno


def absolute_filename(filename):
    """Make a code filename absolute; pseudo names such as "<string>" stay."""
    if not filename or filename.startswith("<"):
        return filename
    return os.path.abspath(filename)


def to_json_value(value):
    """Return ``(value, True)`` if it encodes as JSON, else ``(repr, False)``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return safe_repr(value), False
    return value, True


def target_names(target):
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        names = []
        for element in target.elts:
            names.extend(target_names(element))
        return names
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return []


def binding_lines(path):
    """Map each module-level name in ``path`` to the line of its last binding.

    Statements nested in module-level ``if``/``try``/``with``/loops count,
    because they still bind module globals. Returns {} for unreadable files.
    """
    try:
        with open(path, "rb") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError, RecursionError):
        return {}
    lines = {}
    visit_statements(tree.body, lines)
    return lines


def visit_statements(statements, lines):
    for node in statements:
        for name in bound_names(node):
            lines[name] = node.lineno
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                visit_statements(block, lines)
        for handler in getattr(node, "handlers", None) or []:
            if handler.name:
                lines[handler.name] = handler.lineno
            visit_statements(handler.body, lines)
        for case in getattr(node, "cases", None) or []:
            visit_statements(case.body, lines)


def bound_names(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        names = []
        for target in node.targets:
            names.extend(target_names(target))
        return names
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        return target_names(node.target)
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [
            alias.asname or alias.name.split(".")[0]
            for alias in node.names
            if alias.name != "*"
        ]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        names = []
        for item in node.items:
            if item.optional_vars is not None:
                names.extend(target_names(item.optional_vars))
        return names
    return []


def is_unknown_candidate(name, value):
    """Tell whether a config-file global looks like a mistyped setting."""
    if name.startswith("_"):
        return False
    return not (
        inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value)
    )


class SettingsProbe:
    """State of one instrumented run of Gunicorn's configuration loading."""

    def __init__(self, argv):
        self.argv = list(argv)
        self.cfg = None
        self.util = None
        self.config_module = None
        self.config_class = None
        self.sources = {}
        self.app_uri = None
        self.result = {
            "probe": "settings",
            "python": platform.python_version(),
            "gunicorn_version": None,
            "argv": list(argv),
            "cwd": os.getcwd(),
            "settings": {},
            "non_literal": [],
            "sources": {},
            "cli_flags": {},
            "config_file": None,
            "config_location": None,
            "config_origin": None,
            "unknown_names": [],
            "app_uri": None,
            "worker_class": None,
            "error": None,
        }

    def run(self):
        _, exc = guarded(self.load)
        if isinstance(exc, StageError):
            self.result["error"] = exc.error
        elif exc is not None:
            self.result["error"] = make_error("probe", exc)
        if self.cfg is not None:
            _, exc = guarded(self.collect)
            if exc is not None and self.result["error"] is None:
                self.result["error"] = make_error("probe", exc)
        return self.result

    def load(self):
        """Follow gunicorn's ``load_config``, raising StageError at the first failure."""
        self.import_gunicorn()

        # Gunicorn's argv[0] is its own script path, and config files may read it.
        bindir = os.path.dirname(os.path.abspath(sys.executable))
        sys.argv = [os.path.join(bindir, "gunicorn"), *self.argv]

        self.cfg = self.checked("probe", self.config_class, USAGE, prog="gunicorn")
        for name in self.cfg.settings:
            self.sources[name] = {"kind": "default", "path": None, "line": None}

        parser = self.checked("probe", self.cfg.parser)
        patch_parser(parser)
        args = self.parse(parser, self.argv, "argv")
        self.init_app(args)
        self.checked("settings", self.chdir)

        env_args = self.parse_env(parser)

        if args.config:
            self.load_config_file(args.config, "cli")
        elif env_args is not None and env_args.config:
            self.load_config_file(env_args.config, "env")
        else:
            default_config = self.default_config_file()
            if default_config is not None:
                self.load_config_file(default_config, "default")

        if env_args is not None:
            self.apply_namespace(env_args, "env")
        self.apply_namespace(args, "cli")
        # The config file may have changed chdir, so enter it again as gunicorn does.
        self.checked("settings", self.chdir)

        if self.app_uri is None and "wsgi_app" in self.cfg.settings:
            self.app_uri = self.cfg.settings["wsgi_app"].get()
        self.result["app_uri"] = self.app_uri
        if self.app_uri is None:
            raise StageError(
                plain_error("argv", "ConfigError", "No application module specified.")
            )

        validate = getattr(self.cfg, "validate", None)
        if callable(validate):
            self.checked("settings", validate)

    def import_gunicorn(self):
        gunicorn = self.checked("probe", importlib.import_module, "gunicorn")
        self.result["gunicorn_version"] = getattr(gunicorn, "__version__", None)
        self.util = self.checked("probe", importlib.import_module, "gunicorn.util")
        config_module = self.checked(
            "probe", importlib.import_module, "gunicorn.config"
        )
        self.config_class = config_module.Config
        self.config_module = config_module

    def checked(self, stage, function, *args, **kwargs):
        """Call ``function``, turning any exception into a StageError for ``stage``."""
        value, exc = guarded(function, *args, **kwargs)
        if isinstance(exc, StageError):
            raise exc
        if exc is not None:
            raise StageError(make_error(stage, exc))
        return value

    def parse(self, parser, arguments, stage):
        namespace, exc = guarded(parser.parse_args, arguments)
        if isinstance(exc, ArgparseExit):
            message = str(exc).strip()
            if exc.status == 0:
                message = "gunicorn printed its help or version and exited"
            error = plain_error(stage, "ArgumentError", message)
            error["exit_status"] = exc.status
            raise StageError(error)
        if exc is not None:
            raise StageError(make_error(stage, exc))
        return namespace

    def parse_env(self, parser):
        get_env_args = getattr(self.cfg, "get_cmd_args_from_env", None)
        if get_env_args is None:
            return None
        env_argv = self.checked("env", get_env_args)
        self.result["env_argv"] = list(env_argv)
        return self.parse(parser, env_argv, "env")

    def init_app(self, args):
        """Mirror ``WSGIApplication.init``: take the app URI from the arguments."""
        paste = getattr(args, "paste", None)
        if paste:
            self.checked("argv", self.init_paste, paste)
            return
        if args.args:
            self.app_uri = args.args[0]
            self.result["app_uri"] = self.app_uri
            self.set_value("default_proc_name", args.args[0], "cli")
        elif "wsgi_app" not in self.cfg.settings:
            # Before 20.1 gunicorn calls parser.error here, before any config file.
            error = plain_error(
                "argv", "ArgumentError", "No application module specified."
            )
            error["exit_status"] = 2
            raise StageError(error)

    def init_paste(self, paste):
        config_uri = os.path.abspath(paste)
        config_file = config_uri.split("#")[0]
        pasterapp = importlib.import_module("gunicorn.app.pasterapp")
        if not os.path.exists(config_file):
            raise RuntimeError(f"{config_file!r} not found")
        self.app_uri = config_uri
        self.result["app_uri"] = config_uri
        self.set_value("default_proc_name", config_file, "cli")
        if pasterapp.has_logging_config(config_file):
            self.set_value("logconfig", config_file, "cli")

    def chdir(self):
        directory = self.cfg.settings["chdir"].get()
        os.chdir(directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)

    def default_config_file(self):
        finder = getattr(self.config_module, "get_default_config_file", None)
        if finder is None:
            return None
        return self.checked("config", finder)

    def load_config_file(self, location, origin):
        self.result["config_origin"] = origin
        self.result["config_location"] = location
        if location.startswith("python:"):
            module_name = location[len("python:") :]
            module, exc = guarded(importlib.import_module, module_name)
            if exc is not None:
                path, line = frame_in_file(exc, None)
                raise StageError(make_error("config", exc, path=path, line=line))
            path = getattr(module, "__file__", None)
            if path:
                path = os.path.abspath(path)
            self.result["config_file"] = path or location
            namespace = vars(module)
        else:
            filename = location
            if location.startswith("file:"):
                filename = location[len("file:") :]
            path = os.path.abspath(filename)
            self.result["config_file"] = path
            if not os.path.exists(filename):
                exc = RuntimeError(f"{filename!r} doesn't exist")
                raise StageError(make_error("config", exc, path=path))
            namespace = self.execute_config(filename, path)

        lines = binding_lines(path) if path else {}
        self.record_unknown_names(namespace, lines)
        for name, value in list(namespace.items()):
            if name not in self.cfg.settings:
                continue
            self.set_value(name, value, "config", path, lines.get(name))

    def execute_config(self, filename, path):
        """Execute the config file as gunicorn does and return its namespace."""
        version = version_tuple(self.result["gunicorn_version"])
        module, exc = guarded(load_module_from_file, "__config__", filename, version)
        if exc is not None:
            error_path, line = frame_in_file(exc, path)
            raise StageError(make_error("config", exc, path=error_path, line=line))
        return vars(module)

    def record_unknown_names(self, namespace, lines):
        unknown = []
        for name, value in namespace.items():
            if name in self.cfg.settings or not is_unknown_candidate(name, value):
                continue
            unknown.append({"name": name, "line": lines.get(name)})
        self.result["unknown_names"] = unknown

    def apply_namespace(self, namespace, kind):
        for name, value in vars(namespace).items():
            if value is None or name == "args":
                continue
            self.set_value(name.lower(), value, kind)

    def set_value(self, name, value, kind, path=None, line=None):
        _, exc = guarded(self.cfg.set, name.lower(), value)
        if exc is not None:
            error = make_error(
                "settings",
                exc,
                path=path,
                line=line,
                setting=name,
                value=safe_repr(value),
                source=kind,
            )
            error["message"] = (
                f"Invalid value for {name}: {safe_repr(value)}: "
                f"{exception_message(exc)}"
            )
            raise StageError(error)
        self.sources[name.lower()] = {"kind": kind, "path": path, "line": line}

    def collect(self):
        """Fill settings, sources, flags and the worker class from ``self.cfg``."""
        settings = {}
        non_literal = []
        flags = {}
        for name in sorted(self.cfg.settings):
            setting = self.cfg.settings[name]
            value, literal = to_json_value(setting.get())
            settings[name] = value
            if not literal:
                non_literal.append(name)
            flags[name] = list(getattr(setting, "cli", None) or [])
        self.result["settings"] = settings
        self.result["non_literal"] = non_literal
        self.result["cli_flags"] = flags
        self.result["sources"] = self.sources
        self.result["worker_class"] = self.resolve_worker_class()

    def resolve_worker_class(self):
        """Resolve the worker class as ``Config.worker_class`` does, without setup().

        ``setup()`` of the gevent worker monkey-patches the standard library,
        which the probe has no reason to do.
        """
        uri = self.cfg.settings["worker_class"].get()
        configured = uri if isinstance(uri, str) else class_path(uri)
        info = {"configured": configured, "runs": configured, "error": None}
        threads = 1
        if "threads" in self.cfg.settings:
            threads = self.cfg.settings["threads"].get()
        if isinstance(uri, str):
            is_sync = uri.endswith("SyncWorker") or uri == "sync"
            if is_sync and isinstance(threads, int) and threads > 1:
                uri = THREAD_WORKER
            info["runs"] = bundled_worker_path(uri)
        worker, exc = guarded(self.util.load_class, uri)
        if exc is not None:
            info["error"] = short_load_error(exc)
            return info
        info["runs"] = class_path(worker)
        return info


def plain_error(stage, error_type, message):
    return {
        "stage": stage,
        "type": error_type,
        "message": message,
        "path": None,
        "line": None,
        "traceback": "",
    }


def patch_parser(parser):
    """Make argparse raise ArgparseExit where it would call ``sys.exit``.

    argparse reports errors through ``parser.error`` and ends --help and
    --version through ``parser.exit``.
    """

    def error(message):
        raise ArgparseExit(message, 2)

    def exit_(status=0, message=None):
        raise ArgparseExit(message or "", status)

    parser.error = error
    parser.exit = exit_


def load_module_from_file(module_name, filename, version):
    """Execute ``filename`` as ``get_config_from_filename`` of gunicorn ``version`` does.

    20.0.0 executes the file into a bare module (no ``__file__``), 20.0.1 and
    20.0.2 use a file-location spec whatever the extension, and 20.0.3 onward
    warns about a non-Python extension and loads it as source anyway.
    """
    if version < (20, 0, 1):
        module = types.ModuleType(module_name)
        importlib.machinery.SourceFileLoader(module_name, filename).exec_module(module)
        return module
    if version < (20, 0, 3) or os.path.splitext(filename)[1] in (".py", ".pyc"):
        spec = importlib.util.spec_from_file_location(module_name, filename)
    else:
        sys.stderr.write(
            "!!!\n!!! WARNING: configuration file should have a valid Python "
            "extension.\n!!!\n"
        )
        loader = importlib.machinery.SourceFileLoader(module_name, filename)
        spec = importlib.util.spec_from_file_location(
            module_name, filename, loader=loader
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def version_tuple(version):
    """Parse "20.0.4" into (20, 0, 4). An unparsable version counts as newest."""
    parts = []
    for part in str(version or "").split(".")[:3]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits) if digits else 0)
    if not parts or parts[0] == 0:
        return (999, 0, 0)
    return tuple(parts + [0] * (3 - len(parts)))


def class_path(value):
    module = getattr(value, "__module__", None)
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if module and name:
        return f"{module}.{name}"
    return safe_repr(value)


def bundled_worker_path(uri):
    workers, exc = guarded(importlib.import_module, "gunicorn.workers")
    supported = getattr(workers, "SUPPORTED_WORKERS", None) if exc is None else None
    if not isinstance(supported, dict):
        return uri
    return supported.get(uri.lstrip("#"), uri)


def short_load_error(exc):
    """Shorten gunicorn's "class uri ... invalid or not found: [traceback]" text.

    ``util.load_class`` embeds a whole traceback in brackets; its last line
    names the real cause, such as a missing gevent.
    """
    message = exception_message(exc)
    head, bracket, body = message.partition("[")
    if not bracket:
        return f"{type(exc).__name__}: {message}"
    lines = [line.strip() for line in body.rstrip().rstrip("]").splitlines()]
    lines = [line for line in lines if line]
    cause = lines[-1] if lines else ""
    return f"{head.strip().rstrip(':').strip()}: {cause}"


def mimic_gunicorn_sys_path():
    """Put the interpreter's directory first on sys.path, as ``bin/gunicorn`` has.

    Run with ``python -c``, a probe starts with "" (the working directory) as
    ``sys.path[0]``, but the gunicorn script starts with its own directory.
    """
    if sys.path and sys.path[0] == "":
        sys.path[0] = os.path.dirname(os.path.abspath(sys.executable))


def import_app(result, cfg):
    """Import the app as a worker of this configuration would, into ``result``."""
    if result.get("error") is not None or not result.get("app_uri"):
        return
    probe = sys.modules.get("gunicorn_doctor_probe_import")
    if probe is None:
        return
    # The arbiter exports raw_env before it forks workers.
    environment, exc = guarded(lambda: cfg.env)
    if exc is None and environment:
        os.environ.update(environment)
    pythonpath = cfg.settings["pythonpath"].get() or ""
    imported, exc = guarded(
        lambda: probe.ImportProbe(result["app_uri"], pythonpath.split(",")).run()
    )
    if exc is not None:
        imported = {"status": "probe_failed", "message": exception_message(exc)}
    result["import"] = imported


def main():
    saved_stdout = redirect_stdout()
    mimic_gunicorn_sys_path()
    argv = sys.argv[1:]
    wants_import = argv[:2] == ["--import-app", "--"]
    if wants_import:
        argv = argv[2:]
    probe = SettingsProbe(argv)
    result, exc = guarded(probe.run)
    if exc is not None:
        result = {"probe": "settings", "error": make_error("probe", exc)}
    elif wants_import and probe.cfg is not None:
        import_app(result, probe.cfg)
    # What the venv probe reports comes along, so that one interpreter start
    # serves both the venv checks and the settings.
    interpreter, exc = guarded(describe_interpreter)
    result["interpreter"] = interpreter if exc is None else {"error": describe(exc)}
    write_result(saved_stdout, result)


if __name__ == "__main__":
    main()
