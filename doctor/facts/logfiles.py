"""Log destinations of a gunicorn deployment, the users that open them, and logrotate.

gunicorn 20.0 to 27.x (``gunicorn/glogging.py``, ``Logger.setup``) opens
``accesslog`` and ``errorlog`` in the master at start, before any worker
exists, and chowns each file to the ``user`` and ``group`` settings (an
unprivileged master can only keep the file for itself). ``capture_output`` points the stdout and stderr
of every gunicorn process at ``errorlog``. Of ``logconfig_dict``,
``logconfig_json`` (21.0+) and ``logconfig`` only the first one set is
applied, and its file handlers are opened in the master at start too.

On USR1 the master reopens the files (``Logger.reopen_files``) and sends USR1
to the workers, which reopen them as the worker user. On HUP the master
reloads its configuration, reopens the files and starts new workers, which
inherit the new files. Relative paths are taken from the ``chdir`` setting,
which gunicorn changes to before it creates the logger.
"""

from __future__ import annotations

import ast
import configparser
import copy
import json
import os
import posixpath
import pwd
import re
import shlex
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from doctor.context import Context, FactUnavailable, fact
from doctor.findings import Location
from doctor.perms import Identity
from doctor.rootfs import RootFS
from doctor.settings_model import EffectiveSettings

# Paths that name the process's own streams instead of a file.
STREAM_PATHS = {
    "/dev/stdout": "stdout",
    "/dev/stderr": "stderr",
    "/dev/fd/1": "stdout",
    "/dev/fd/2": "stderr",
    "/proc/self/fd/1": "stdout",
    "/proc/self/fd/2": "stderr",
}
DISCARD_PATH = "/dev/null"
FILE_HANDLER_CLASSES = (
    "FileHandler",
    "RotatingFileHandler",
    "TimedRotatingFileHandler",
    "WatchedFileHandler",
)
# systemd.exec(5): StandardOutput= defaults to DefaultStandardOutput=, which is
# "journal". StandardError= defaults to "inherit", the same as StandardOutput=.
JOURNAL_OUTPUTS = (
    "journal",
    "journal+console",
    "kmsg",
    "kmsg+console",
    "syslog",
    "syslog+console",
)
FILE_OUTPUT_PREFIXES = ("file:", "append:", "truncate:")


class LogFile(NamedTuple):
    """A file that log lines are appended to, and where its path comes from."""

    # The setting that names the file: accesslog, errorlog, capture_output,
    # logconfig, logconfig_json, logconfig_dict, or StandardOutput/StandardError.
    setting: str
    path: str
    role: str
    origin: str
    location: Location | None
    # "gunicorn", or "systemd" for a StandardOutput=/StandardError= file that
    # systemd opens as root before it starts gunicorn.
    opener: str = "gunicorn"
    handler_class: str = "logging.FileHandler"
    # The systemd output mode ("file", "append" or "truncate") for opener "systemd".
    output_mode: str | None = None

    @property
    def reopens_itself(self) -> bool:
        """Tell whether the handler reopens the file when its inode changes."""
        return self.handler_class.endswith("WatchedFileHandler")

    @property
    def rotates_itself(self) -> bool:
        """Tell whether the handler renames the file itself when it grows or ages."""
        return self.handler_class.endswith(
            ("RotatingFileHandler", "TimedRotatingFileHandler")
        )


class LogStream(NamedTuple):
    """Log lines written to the process's stdout or stderr, or discarded."""

    setting: str
    role: str
    # "stdout", "stderr" or "discarded" (the path /dev/null).
    stream: str
    origin: str
    location: Location | None


class Unchecked(NamedTuple):
    """A log destination the doctor cannot read without running the config."""

    what: str
    reason: str
    location: Location | None


class MissingLogConfig(NamedTuple):
    """A logging config file named by a setting that does not exist."""

    setting: str
    path: str
    origin: str
    location: Location | None
    # gunicorn exits when ``logconfig`` is missing but silently ignores a
    # missing ``logconfig_json``.
    gunicorn_exits: bool


class StdioTarget(NamedTuple):
    """The place a gunicorn process's stdout or stderr goes to."""

    # "journal", "null", "file", "console", "socket", "pipe" or "unknown".
    kind: str
    description: str
    evidence: str
    location: Location | None = None
    path: str | None = None
    # What decides it: "daemon", "StandardOutput", "StandardError" or "process".
    cause: str = "process"


class Opener(NamedTuple):
    """A user that opens the log files, and the source of that fact."""

    role: str
    name: str
    identity: Identity | None
    primary_gid: int | None
    source: str


@dataclass
class LogSetup:
    """Every log destination of the deployment and the users that open them."""

    settings: EffectiveSettings
    files: list[LogFile] = field(default_factory=list)
    streams: list[LogStream] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)
    missing_configs: list[MissingLogConfig] = field(default_factory=list)
    access_log_disabled: bool = False
    stdio: dict[str, StdioTarget] = field(default_factory=dict)
    master: Opener | None = None
    workers: Opener | None = None
    unit_name: str | None = None
    working_directory: str = "/"

    def files_by_path(self) -> dict[str, list[LogFile]]:
        """Group the log files by path, in the order they were found."""
        grouped: dict[str, list[LogFile]] = {}
        for log in self.files:
            grouped.setdefault(log.path, []).append(log)
        return grouped

    @property
    def workers_differ(self) -> bool:
        """Tell whether the workers run as another user or group than the master."""
        if self.master is None or self.workers is None:
            return False
        master, workers = self.master.identity, self.workers.identity
        if master is None or workers is None:
            return self.master.name != self.workers.name
        return master.uid != workers.uid or master.gids != workers.gids


@fact("log_setup")
def log_setup(ctx: Context) -> LogSetup:
    """Collect the log destinations from the effective settings and the unit."""
    settings = ctx.fact("settings")
    if settings.error:
        raise FactUnavailable(
            "gunicorn did not finish loading the configuration, so its log"
            " settings are unknown (see config-file)"
        )
    setup = LogSetup(settings=settings)
    setup.working_directory = _working_directory(ctx, settings)
    if ctx.target.unit is not None:
        setup.unit_name = posixpath.basename(ctx.target.unit.value)
    _collect_gunicorn_logs(ctx, setup)
    _collect_logconfig(ctx, setup)
    setup.stdio = _stdio_targets(ctx, setup)
    _collect_systemd_files(ctx, setup)
    setup.master, setup.workers = _openers(ctx, settings)
    return setup


def _working_directory(ctx: Context, settings: EffectiveSettings) -> str:
    """Return the directory relative log paths are taken from."""
    base = ctx.target.chdir.value if ctx.target.chdir else "/"
    value = settings.get("chdir")
    if settings.source("chdir").kind == "default" or not isinstance(value, str):
        # The probe's default is its own working directory, which is the
        # deployment directory on this host. The static estimate's default is
        # meaningless, so both cases use the deployment directory.
        return base
    if not ctx.fs.is_live and value.startswith(str(ctx.fs.root) + "/"):
        value = ctx.fs.display(value)
    return posixpath.normpath(posixpath.join(base, value))


def _absolute(setup: LogSetup, path: str) -> str:
    return posixpath.normpath(posixpath.join(setup.working_directory, path))


def _setting_location(ctx: Context, settings: EffectiveSettings, name: str):
    location = settings.location(name)
    if location is not None:
        return location
    if settings.source(name).kind == "cli" and ctx.target.service is not None:
        entry = ctx.target.service.exec_start_entry
        if entry is not None:
            return Location(entry.path, entry.line)
    return None


def _collect_gunicorn_logs(ctx: Context, setup: LogSetup) -> None:
    """Add capture_output, errorlog and accesslog, in the order gunicorn opens them."""
    settings = setup.settings
    errorlog = settings.get("errorlog")
    if (
        settings.get("capture_output")
        and isinstance(errorlog, str)
        and errorlog != "-"
        and "errorlog" not in settings.non_literal
    ):
        _add_destination(
            setup,
            "capture_output",
            "stdout and stderr of every gunicorn process (capture_output)",
            errorlog,
            "stderr",
            f"{settings.describe('capture_output')}, {settings.describe('errorlog')}",
            _setting_location(ctx, settings, "capture_output"),
        )
    for name, role, stream in (
        ("errorlog", "error log", "stderr"),
        ("accesslog", "access log", "stdout"),
    ):
        location = _setting_location(ctx, settings, name)
        if name in settings.non_literal:
            setup.unchecked.append(
                Unchecked(
                    f"the {role} ({name})", _opaque_reason(settings, name), location
                )
            )
            continue
        value = settings.get(name)
        if value is None:
            # With accesslog None gunicorn logs no requests. errorlog None
            # is not a documented value and is left alone.
            if name == "accesslog":
                setup.access_log_disabled = True
            continue
        origin = settings.describe(name)
        _add_destination(setup, name, role, value, stream, origin, location)


def _opaque_reason(settings: EffectiveSettings, name: str) -> str:
    """Say why the value of setting ``name`` is not known as plain data."""
    if settings.estimated:
        return (
            f"the config computes it ({settings.non_literal[name]}), which a"
            " static reading cannot evaluate"
        )
    return f"its value is not plain data ({settings.non_literal[name]})"


def _add_destination(
    setup: LogSetup,
    setting: str,
    role: str,
    value: Any,
    stream: str,
    origin: str,
    location: Location | None,
    handler_class: str = "logging.FileHandler",
) -> None:
    if not isinstance(value, str) or not value:
        setup.unchecked.append(
            Unchecked(role, f"its value {value!r} is not a file path", location)
        )
        return
    if value == "-":
        setup.streams.append(LogStream(setting, role, stream, origin, location))
        return
    path = _absolute(setup, value)
    if path in STREAM_PATHS:
        setup.streams.append(
            LogStream(setting, role, STREAM_PATHS[path], origin, location)
        )
        return
    if path == DISCARD_PATH:
        setup.streams.append(LogStream(setting, role, "discarded", origin, location))
        return
    setup.files.append(
        LogFile(setting, path, role, origin, location, handler_class=handler_class)
    )


# --- logconfig, logconfig_json and logconfig_dict -------------------------------


def _collect_logconfig(ctx: Context, setup: LogSetup) -> None:
    """Add the handlers of the one logging config gunicorn applies."""
    settings = setup.settings
    for name in ("logconfig_dict", "logconfig_json", "logconfig"):
        if name in settings.non_literal:
            setup.unchecked.append(
                Unchecked(
                    f"the handlers of {name}",
                    _opaque_reason(settings, name),
                    _setting_location(ctx, settings, name),
                )
            )
            return
        value = settings.get(name)
        if not value:
            continue
        location = _setting_location(ctx, settings, name)
        if name == "logconfig_dict":
            _add_dict_handlers(setup, name, value, "logconfig_dict", location)
        elif name == "logconfig_json":
            _add_json_handlers(ctx, setup, value, location)
        else:
            _add_ini_handlers(ctx, setup, value, location)
        return


def _add_dict_handlers(
    setup: LogSetup, setting: str, config: Any, origin: str, location: Location | None
) -> None:
    if not isinstance(config, dict):
        setup.unchecked.append(
            Unchecked(origin, f"it is not a dictionary: {config!r}", location)
        )
        return
    handlers = config.get("handlers") or {}
    if not isinstance(handlers, dict):
        setup.unchecked.append(
            Unchecked(
                f"the handlers of {origin}", "'handlers' is not a dictionary", location
            )
        )
        return
    for name, handler in handlers.items():
        role = f"handler {name!r} of {origin}"
        if not isinstance(handler, dict):
            setup.unchecked.append(Unchecked(role, "it is not a dictionary", location))
            continue
        klass = str(handler.get("class") or "")
        filename = handler.get("filename")
        if filename is None:
            _add_dict_stream(setup, setting, role, handler, klass, location)
            continue
        _add_destination(
            setup,
            setting,
            role,
            filename,
            "stderr",
            f"{origin}: handlers.{name}.filename = {filename!r} ({klass or 'no class'})",
            location,
            handler_class=klass or "logging.FileHandler",
        )


def _add_dict_stream(
    setup: LogSetup, setting: str, role: str, handler: dict, klass: str, location
) -> None:
    if "()" in handler:
        setup.unchecked.append(
            Unchecked(
                role,
                f"it is built by the factory {handler['()']!r}, which only runs"
                " inside gunicorn",
                location,
            )
        )
        return
    if not klass.endswith("StreamHandler"):
        return
    stream = str(handler.get("stream") or "ext://sys.stderr")
    name = "stdout" if stream.endswith("stdout") else "stderr"
    setup.streams.append(
        LogStream(setting, role, name, f"{role}: {klass}, stream {stream}", location)
    )


def _add_json_handlers(
    ctx: Context, setup: LogSetup, value: Any, location: Location | None
) -> None:
    if not isinstance(value, str):
        setup.unchecked.append(
            Unchecked("logconfig_json", f"{value!r} is not a path", location)
        )
        return
    path = _absolute(setup, value)
    host = ctx.fs.host(path)
    if not host.exists():
        setup.missing_configs.append(
            MissingLogConfig(
                "logconfig_json",
                path,
                setup.settings.describe("logconfig_json"),
                location,
                gunicorn_exits=False,
            )
        )
        return
    try:
        config = json.loads(host.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        setup.unchecked.append(
            Unchecked(
                f"the handlers of {path}",
                f"it cannot be read as JSON: {exc}",
                Location(path),
            )
        )
        return
    _add_dict_handlers(setup, "logconfig_json", config, path, Location(path))


def _add_ini_handlers(
    ctx: Context, setup: LogSetup, value: Any, location: Location | None
) -> None:
    """Read the file handlers of a ``logging.config.fileConfig`` INI file.

    ``fileConfig`` installs the handlers listed in ``[handlers] keys=``. Each
    ``[handler_NAME]`` section names a ``class`` and its constructor
    ``args`` (a Python tuple) and ``kwargs``. gunicorn passes ``here`` and
    ``__file__`` as defaults for ``%(name)s`` interpolation.
    """
    if not isinstance(value, str):
        setup.unchecked.append(
            Unchecked("logconfig", f"{value!r} is not a path", location)
        )
        return
    path = _absolute(setup, value)
    host = ctx.fs.host(path)
    if not host.exists():
        setup.missing_configs.append(
            MissingLogConfig(
                "logconfig",
                path,
                setup.settings.describe("logconfig"),
                location,
                gunicorn_exits=True,
            )
        )
        return
    try:
        text = host.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        setup.unchecked.append(
            Unchecked(
                f"the handlers of {path}",
                f"it cannot be read: {reason}",
                Location(path),
            )
        )
        return

    parser = configparser.ConfigParser(
        {"__file__": path, "here": posixpath.dirname(path)}
    )
    try:
        parser.read_string(text, source=path)
        names = [n.strip() for n in parser["handlers"]["keys"].split(",")]
    except (configparser.Error, KeyError) as exc:
        setup.unchecked.append(
            Unchecked(
                f"the handlers of {path}",
                "it cannot be parsed as a logging config: "
                + " ".join(str(exc).split()),
                Location(path),
            )
        )
        return
    lines = _ini_key_lines(text)
    for name in filter(None, names):
        _add_ini_handler(setup, parser, path, name, lines)


def _add_ini_handler(
    setup: LogSetup,
    parser: configparser.ConfigParser,
    path: str,
    name: str,
    lines: dict[tuple[str, str], int],
) -> None:
    section_name = f"handler_{name}"
    role = f"handler {name!r} of {path}"
    line = lines.get((section_name, "args")) or lines.get((section_name, "kwargs"))
    location = Location(path, line or lines.get((section_name, "")))
    try:
        section = parser[section_name]
        klass = section.get("class", "")
        args_text = section.get("args", "()")
        kwargs_text = section.get("kwargs", "{}")
    except (configparser.Error, KeyError) as exc:
        setup.unchecked.append(
            Unchecked(role, f"the section cannot be read: {exc!s}", location)
        )
        return

    short_class = klass.rsplit(".", 1)[-1]
    try:
        args = ast.literal_eval(args_text)
        kwargs = ast.literal_eval(kwargs_text)
    except (ValueError, SyntaxError):
        if short_class.endswith("StreamHandler"):
            stream = "stdout" if "stdout" in args_text else "stderr"
            setup.streams.append(
                LogStream(
                    "logconfig", role, stream, f"{role}: {klass}{args_text}", location
                )
            )
        elif short_class in FILE_HANDLER_CLASSES or "filename" in kwargs_text:
            setup.unchecked.append(
                Unchecked(
                    role,
                    f"args={args_text} is an expression fileConfig evaluates,"
                    " not a literal",
                    location,
                )
            )
        return

    if not isinstance(args, tuple):
        args = (args,)
    filename = kwargs.get("filename") if isinstance(kwargs, dict) else None
    if filename is None and short_class in FILE_HANDLER_CLASSES and args:
        filename = args[0]
    if filename is None:
        return
    _add_destination(
        setup,
        "logconfig",
        role,
        filename,
        "stderr",
        f"{path}: [{section_name}] class={klass} args={args_text}",
        location,
        handler_class=klass,
    )


def _ini_key_lines(text: str) -> dict[tuple[str, str], int]:
    """Map (section, key) to its 1-based line; key "" is the section header."""
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
            lines.setdefault((section, ""), number)
            continue
        match = re.match(r"([^=:\s]+)\s*[=:]", stripped)
        if match and not raw[:1].isspace():
            lines.setdefault((section, match.group(1).lower()), number)
    return lines


# --- stdout and stderr ------------------------------------------------------------


def _stdio_targets(ctx: Context, setup: LogSetup) -> dict[str, StdioTarget]:
    settings = setup.settings
    if settings.get("daemon") and not settings.get("enable_stdio_inheritance"):
        target = StdioTarget(
            "null",
            "/dev/null",
            f"{settings.describe('daemon')}: gunicorn points stdout and stderr"
            " at /dev/null when it daemonizes",
            _setting_location(ctx, settings, "daemon"),
            cause="daemon",
        )
        return {"stdout": target, "stderr": target}
    if ctx.target.service is not None:
        return _unit_stdio(ctx, setup)
    return _process_stdio(ctx)


def _unit_stdio(ctx: Context, setup: LogSetup) -> dict[str, StdioTarget]:
    unit = ctx.target.service.unit
    journal = f"the journal (journalctl -u {setup.unit_name})"
    stdout_entry = unit.value("Service", "StandardOutput")
    if stdout_entry is None:
        stdout = StdioTarget(
            "journal",
            journal,
            "StandardOutput= is not set: systemd's default is journal",
            cause="StandardOutput",
        )
    else:
        stdout = _systemd_output(stdout_entry, journal)
    stderr_entry = unit.value("Service", "StandardError")
    if stderr_entry is None or stderr_entry.value == "inherit":
        setting = (
            "StandardError= is not set"
            if stderr_entry is None
            else "StandardError=inherit"
        )
        stderr = StdioTarget(
            stdout.kind,
            stdout.description,
            f"{setting}: stderr goes where stdout goes ({stdout.evidence})",
            stdout.location if stderr_entry is None else _entry_location(stderr_entry),
            stdout.path,
            cause="StandardOutput",
        )
    else:
        stderr = _systemd_output(stderr_entry, journal)
    return {"stdout": stdout, "stderr": stderr}


def _entry_location(entry) -> Location:
    return Location(entry.path, entry.line)


def _systemd_output(entry, journal: str) -> StdioTarget:
    value = entry.value
    evidence = f"{entry.key}={value}"
    location = _entry_location(entry)
    if value in JOURNAL_OUTPUTS:
        return StdioTarget("journal", journal, evidence, location, cause=entry.key)
    if value == "null":
        return StdioTarget("null", "/dev/null", evidence, location, cause=entry.key)
    if value in ("tty", "console") or value.startswith("tty"):
        return StdioTarget(
            "console", "the console (TTYPath=)", evidence, location, cause=entry.key
        )
    if value == "inherit":
        # StandardOutput=inherit copies StandardInput=, which defaults to null.
        return StdioTarget(
            "null",
            "/dev/null (inherited from StandardInput=null)",
            evidence,
            location,
            cause=entry.key,
        )
    for prefix in FILE_OUTPUT_PREFIXES:
        if value.startswith(prefix):
            path = value[len(prefix) :]
            return StdioTarget(
                "file", path, evidence, location, path=path, cause=entry.key
            )
    return StdioTarget(
        "socket",
        f"{value} (a socket or file descriptor)",
        evidence,
        location,
        cause=entry.key,
    )


def _process_stdio(ctx: Context) -> dict[str, StdioTarget]:
    """Read where a running master's stdout and stderr point, when there is one."""
    try:
        master = ctx.fact("master")
    except FactUnavailable:
        unknown = StdioTarget(
            "unknown",
            "the stdout or stderr of whatever starts gunicorn: a terminal, or a"
            " supervisor (supervisord, docker) that captures it",
            "no systemd unit and no running master to read it from",
        )
        return {"stdout": unknown, "stderr": unknown}
    targets = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        targets[name] = _describe_fd(master.pid, fd)
    return targets


def _describe_fd(pid: int, fd: int) -> StdioTarget:
    link = f"/proc/{pid}/fd/{fd}"
    try:
        target = os.readlink(link)
    except OSError as exc:
        return StdioTarget(
            "unknown", "unknown", f"{link} cannot be read: {exc.strerror}"
        )
    evidence = f"{link} -> {target}"
    if target == DISCARD_PATH:
        return StdioTarget("null", "/dev/null", evidence)
    if target.startswith(("/dev/pts/", "/dev/tty")):
        return StdioTarget(
            "console",
            f"the terminal {target}, whose lines are lost when it closes",
            evidence,
        )
    if target.startswith("socket:"):
        return StdioTarget(
            "socket",
            "a socket: journald, or the supervisor that started gunicorn",
            evidence,
        )
    if target.startswith("pipe:"):
        return StdioTarget(
            "pipe",
            "a pipe to the process that started gunicorn (docker, supervisord,"
            " a shell pipeline)",
            evidence,
        )
    return StdioTarget("file", target, evidence, path=target.removesuffix(" (deleted)"))


def _collect_systemd_files(ctx: Context, setup: LogSetup) -> None:
    """Add StandardOutput=/StandardError= files, which systemd opens as root."""
    if ctx.target.service is None:
        return
    seen = set()
    for name in ("stdout", "stderr"):
        target = setup.stdio.get(name)
        if target is None or target.kind != "file" or target.path in seen:
            continue
        seen.add(target.path)
        key, value = target.evidence.split("=", 1)
        setup.files.append(
            LogFile(
                setting=key,
                path=posixpath.normpath(target.path),
                role=f"service's {name} file ({key}=)",
                origin=target.evidence,
                location=target.location,
                opener="systemd",
                output_mode=value.split(":", 1)[0],
            )
        )


# --- users --------------------------------------------------------------------


def _openers(ctx: Context, settings: EffectiveSettings) -> tuple[Opener, Opener]:
    """Return the master's and the workers' users, as the kernel will see them."""
    fs = ctx.fs
    target = ctx.target
    spec = target.service
    group_value = None
    dynamic = spec.unit.value("Service", "DynamicUser") if spec is not None else None
    if dynamic is not None and dynamic.value.lower() in ("yes", "true", "1", "on"):
        unit_name = posixpath.basename(target.unit.value).removesuffix(".service")
        name = spec.user.value if spec.user is not None else unit_name
        source = (
            f"DynamicUser={dynamic.value} ({dynamic.path}:{dynamic.line}): systemd"
            " allocates the uid at each start"
        )
        master = Opener("master", name, None, None, source)
        return master, _worker_opener(fs, settings, master)
    if spec is not None:
        if spec.user is not None:
            name = spec.user.value
            source = f"User= ({spec.user.path}:{spec.user.line})"
        else:
            name = "root"
            source = f"{target.unit.value} sets no User=, so systemd starts it as root"
        if spec.group is not None:
            group_value = spec.group.value
    elif target.user is not None:
        name, source = target.user.value, target.user.source
    else:
        uid = os.geteuid()
        entry = fs.user(uid)
        name = entry.name if entry else _host_user_name(uid)
        source = (
            "no systemd unit and no running master: assumed to be the user"
            " running the doctor"
        )
    master = _master_opener(fs, name, group_value, source)
    return master, _worker_opener(fs, settings, master)


def _host_user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _master_opener(
    fs: RootFS, name: str, group_value: str | None, source: str
) -> Opener:
    entry = fs.user(name)
    if entry is None:
        return Opener("master", name, None, None, source)
    primary = entry.gid
    if group_value is not None:
        group = fs.group(group_value)
        primary = group.gid if group is not None else primary
    gids = {primary} | _supplementary_gids(fs, entry.name)
    return Opener(
        "master",
        entry.name,
        Identity(entry.name, entry.uid, frozenset(gids)),
        primary,
        source,
    )


def _supplementary_gids(fs: RootFS, user_name: str) -> set[int]:
    return {g.gid for g in fs.groups.values() if user_name in g.members}


def _worker_opener(fs: RootFS, settings: EffectiveSettings, master: Opener) -> Opener:
    """Return the workers' user: gunicorn's ``user``/``group`` settings.

    gunicorn's defaults for both are the master's effective uid and gid.
    A worker calls setgid() and setuid() and keeps the master's
    supplementary groups unless ``initgroups`` is set.
    """
    user_set = settings.source("user").kind != "default"
    group_set = settings.source("group").kind != "default"
    if not user_set and not group_set:
        return Opener(
            "workers",
            master.name,
            master.identity,
            master.primary_gid,
            "gunicorn's user setting is not set, so the workers run as the"
            " master's user",
        )
    user_value = settings.get("user") if user_set else master.name
    entry = fs.user(user_value) if user_value is not None else None
    source = settings.describe("user") if user_set else settings.describe("group")
    if entry is None:
        return Opener("workers", str(user_value), None, None, source)
    primary = master.primary_gid if master.primary_gid is not None else entry.gid
    if group_set:
        group = fs.group(settings.get("group"))
        primary = group.gid if group is not None else primary
    if settings.get("initgroups"):
        extra = _supplementary_gids(fs, entry.name)
    else:
        extra = _supplementary_gids(fs, master.name)
    gids = {primary} | extra
    return Opener(
        "workers",
        entry.name,
        Identity(entry.name, entry.uid, frozenset(gids)),
        primary,
        source,
    )


# --- logrotate ------------------------------------------------------------------

LOGROTATE_CONF = "/etc/logrotate.conf"
LOGROTATE_DIR = "/etc/logrotate.d"
# logrotate's config.c skips these names in an included directory
# (defTabooExts, matched as "*EXT").
TABOO_PATTERNS = tuple(
    "*" + ext
    for ext in [
        ",v",
        ".bak",
        ".cfsaved",
        ".disabled",
        ".dpkg-bak",
        ".dpkg-del",
        ".dpkg-dist",
        ".dpkg-new",
        ".dpkg-old",
        ".dpkg-tmp",
        ".new",
        ".old",
        ".orig",
        ".pacnew",
        ".pacorig",
        ".pacsave",
        ".rhn-cfg-tmp-*",
        ".rpmnew",
        ".rpmorig",
        ".rpmsave",
        ".swp",
        ".ucf-dist",
        ".ucf-new",
        ".ucf-old",
        "~",
    ]
)
MAX_INCLUDE_DEPTH = 16
# logrotate keywords that take no value (config.c), so that several may
# share a line.
FLAG_KEYWORDS = frozenset(
    [
        "compress",
        "nocompress",
        "delaycompress",
        "nodelaycompress",
        "shred",
        "noshred",
        "allowhardlink",
        "noallowhardlink",
        "sharedscripts",
        "nosharedscripts",
        "copytruncate",
        "nocopytruncate",
        "renamecopy",
        "norenamecopy",
        "copy",
        "nocopy",
        "ifempty",
        "notifempty",
        "dateext",
        "nodateext",
        "dateyesterday",
        "nodateyesterday",
        "datehourago",
        "nodatehourago",
        "noolddir",
        "nocreateolddir",
        "missingok",
        "nomissingok",
        "nomail",
        "mailfirst",
        "maillast",
        "hourly",
        "daily",
        "monthly",
        "yearly",
        "nocreate",
        "ignoreduplicates",
    ]
)
SCRIPT_KEYWORDS = ("postrotate", "prerotate", "firstaction", "lastaction", "preremove")


class CreateMode(NamedTuple):
    """The ``create`` directive: attributes of the file made after rotation.

    None fields keep the attributes of the file that was rotated.
    """

    mode: int | None
    owner: str | None
    group: str | None
    line: int | None = None
    path: str | None = None


@dataclass
class RotateOptions:
    """The directives that decide how gunicorn survives a rotation."""

    copytruncate: bool = False
    # "PATH:LINE" of the copytruncate directive, which may be a global one.
    copytruncate_at: str | None = None
    create: CreateMode | None = None
    su: tuple[str, str | None] | None = None


class RotateScript(NamedTuple):
    kind: str
    text: str
    line: int


SIGNAL_NAMES = {
    "USR1": "USR1",
    "SIGUSR1": "USR1",
    "10": "USR1",
    "HUP": "HUP",
    "SIGHUP": "HUP",
    "1": "HUP",
}
RELOAD_VERBS = ("reload", "reload-or-restart", "try-reload-or-restart", "force-reload")
RESTART_VERBS = ("restart", "try-restart")
# Words that may come before the command in a shell script line.
COMMAND_PREFIXES = (
    "sudo",
    "exec",
    "command",
    "env",
    "/usr/bin/env",
    "then",
    "else",
    "do",
    "{",
    "(",
    "!",
)
# systemctl options whose value is a separate word.
SYSTEMCTL_VALUE_OPTIONS = (
    "-s",
    "--signal",
    "--kill-whom",
    "--kill-who",
    "--kill-value",
    "-H",
    "--host",
    "-M",
    "--machine",
)


class SignalCommand(NamedTuple):
    """A command in a logrotate script that signals or reloads a service."""

    text: str
    line: int
    # "pidfile", "pid", "unit-kill", "unit-reload", "unit-restart" or "by-name".
    how: str
    signal: str
    pidfile: str | None = None
    unit: str | None = None
    main_only: bool = False


def find_signal_commands(script: RotateScript) -> list[SignalCommand]:
    """Find the commands in a logrotate script that signal or reload a service."""
    commands = []
    for offset, line in enumerate(script.text.splitlines(), start=1):
        for segment in re.split(r";|&&|\|\|", line):
            segment = segment.strip()
            if not segment or segment.startswith("#"):
                continue
            command = _parse_command(segment, script.line + offset)
            if command is not None:
                commands.append(command)
    return commands


def _parse_command(segment: str, line: int) -> SignalCommand | None:
    try:
        words = shlex.split(segment)
    except ValueError:
        words = segment.split()
    while words and (
        words[0] in COMMAND_PREFIXES or re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0])
    ):
        words = words[1:]
    if not words:
        return None
    program = posixpath.basename(words[0])
    arguments = words[1:]
    if program == "kill":
        return _parse_kill(segment, arguments, line)
    if program in ("pkill", "killall"):
        # For pkill, -n means "newest", not a signal number.
        signal = signal_option(arguments, number_flag=False) or "TERM"
        return SignalCommand(segment, line, "by-name", signal)
    if program == "systemctl":
        return _parse_systemctl(segment, arguments, line)
    if program in ("service", "invoke-rc.d") and len(arguments) >= 2:
        verb = arguments[1]
        if verb in RELOAD_VERBS or verb == "rotate":
            return SignalCommand(segment, line, "unit-reload", "", unit=arguments[0])
        if verb in RESTART_VERBS:
            return SignalCommand(segment, line, "unit-restart", "", unit=arguments[0])
    return None


def signal_option(arguments: list[str], number_flag: bool = True) -> str | None:
    """Return the signal that kill-style ``arguments`` select, such as USR1.

    USR1 and HUP are returned by name whatever their spelling (``-USR1``,
    ``-s SIGUSR1``, ``-10``, ``--signal=HUP``), other signals without the
    SIG prefix, and None when the arguments select no signal.
    """
    flags = ("-s", "--signal", "-n") if number_flag else ("-s", "--signal")
    for index, word in enumerate(arguments):
        if word in flags and index + 1 < len(arguments):
            return _signal_name(arguments[index + 1])
        if word.startswith("--signal="):
            return _signal_name(word.split("=", 1)[1])
        if word.startswith("-") and not word.startswith("--") and len(word) > 1:
            name = word[1:]
            if name.upper() in SIGNAL_NAMES or name.upper().startswith("SIG"):
                return _signal_name(name)
            if name.isdigit():
                return _signal_name(name)
    return None


def _signal_name(text: str) -> str:
    text = text.upper()
    return SIGNAL_NAMES.get(text, text.removeprefix("SIG"))


def _parse_kill(segment: str, arguments: list[str], line: int) -> SignalCommand:
    signal = signal_option(arguments) or "TERM"
    match = re.search(
        r"(?:\bcat|\$\(<|\bhead(?:\s+-n)?\s+-?1)\s+['\"]?([^\s'\"`)]+)", segment
    )
    if match:
        return SignalCommand(segment, line, "pidfile", signal, pidfile=match.group(1))
    return SignalCommand(segment, line, "pid", signal)


def _parse_systemctl(segment: str, arguments: list[str], line: int):
    positional = []
    skip_value = False
    for word in arguments:
        if skip_value:
            skip_value = False
        elif word in SYSTEMCTL_VALUE_OPTIONS:
            skip_value = True
        elif not word.startswith("-"):
            positional.append(word)
    if not positional:
        return None
    verb, units = positional[0], positional[1:]
    unit = units[0] if units else None
    if verb == "kill":
        signal = signal_option(arguments) or "TERM"
        main_only = (
            any(word in ("--kill-whom=main", "--kill-who=main") for word in arguments)
            or "--kill-whom main" in segment
            or "--kill-who main" in segment
        )
        return SignalCommand(
            segment, line, "unit-kill", signal, unit=unit, main_only=main_only
        )
    if verb in RELOAD_VERBS:
        return SignalCommand(segment, line, "unit-reload", "", unit=unit)
    if verb in RESTART_VERBS:
        return SignalCommand(segment, line, "unit-restart", "", unit=unit)
    return None


@dataclass
class LogrotateRule:
    """One ``PATTERN... { ... }`` block of a logrotate config file."""

    path: str
    line: int
    patterns: list[str]
    options: RotateOptions
    scripts: dict[str, RotateScript] = field(default_factory=dict)

    def matching_pattern(self, log_path: str) -> str | None:
        """Return the pattern that covers ``log_path`` as glob(3) would, or None."""
        for pattern in self.patterns:
            if glob_covers(pattern, log_path):
                return pattern
        return None


@dataclass
class LogrotateConfig:
    """The logrotate rules of the host or tree, in the order logrotate reads them."""

    entry: str
    rules: list[LogrotateRule] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, int, str]] = field(default_factory=list)

    def rule_for(self, log_path: str) -> tuple[LogrotateRule, str] | None:
        """Return the first rule that covers ``log_path`` and its pattern.

        logrotate reports a later rule for a file that an earlier one already
        names ("duplicate log entry") and leaves the file out of it, so the
        first rule is the one that runs.
        """
        for rule in self.rules:
            pattern = rule.matching_pattern(log_path)
            if pattern is not None:
                return rule, pattern
        return None


def glob_covers(pattern: str, path: str) -> bool:
    """Tell whether glob(3) ``pattern`` matches ``path``, component by component.

    A wildcard never matches ``/``, and a leading dot must be matched by a
    dot in the pattern, as in glob(3) without GLOB_PERIOD.
    """
    pattern_parts = posixpath.normpath(pattern).split("/")
    path_parts = posixpath.normpath(path).split("/")
    if len(pattern_parts) != len(path_parts):
        return False
    for pattern_part, path_part in zip(pattern_parts, path_parts, strict=True):
        if path_part.startswith(".") and not pattern_part.startswith("."):
            return False
        if not fnmatchcase(path_part, pattern_part):
            return False
    return True


@fact("logrotate")
def logrotate(ctx: Context) -> LogrotateConfig:
    """Read logrotate.conf and what it includes, or logrotate.d/ without it."""
    return read_logrotate(ctx.fs)


def read_logrotate(fs: RootFS) -> LogrotateConfig:
    """Read the logrotate configuration under ``fs``'s root."""
    reader = _LogrotateReader(fs)
    if fs.host(LOGROTATE_CONF).is_file():
        config = LogrotateConfig(entry=LOGROTATE_CONF)
        reader.config = config
        reader.read_path(LOGROTATE_CONF, RotateOptions(), 0)
        return config
    config = LogrotateConfig(
        entry=f"{LOGROTATE_DIR}/ ({LOGROTATE_CONF} is missing, so with"
        " logrotate's built-in defaults)"
    )
    reader.config = config
    if fs.host(LOGROTATE_DIR).is_dir():
        reader.read_path(LOGROTATE_DIR, RotateOptions(), 0)
    return config


class _LogrotateReader:
    """Parse logrotate config files the way logrotate's config.c does.

    Directives outside a block change the defaults of every later block,
    also across ``include``. A block is one or more glob patterns (quoted
    or not, over one or more lines) followed by ``{``. A script runs from
    its keyword to a line whose first word is ``endscript``.
    """

    def __init__(self, fs: RootFS):
        self.fs = fs
        self.config = LogrotateConfig(entry="")

    def problem(self, path: str, line: int, message: str) -> None:
        self.config.problems.append((path, line, message))

    def read_path(self, path: str, defaults: RotateOptions, depth: int) -> None:
        host = self.fs.host(path)
        if host.is_dir():
            try:
                names = sorted(os.listdir(host))
            except OSError as exc:
                self.problem(path, 0, f"cannot list {path}: {exc.strerror}")
                return
            for name in names:
                if name in (".", "..") or any(
                    fnmatchcase(name, taboo) for taboo in TABOO_PATTERNS
                ):
                    continue
                child = posixpath.join(path, name)
                if self.fs.host(child).is_file():
                    self.read_file(child, defaults, depth)
            return
        if not host.exists():
            self.problem(path, 0, f"{path} does not exist")
            return
        self.read_file(path, defaults, depth)

    def read_file(self, path: str, defaults: RotateOptions, depth: int) -> None:
        try:
            text = self.fs.host(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.problem(path, 0, f"cannot read {path}: {exc.strerror}")
            return
        self.config.files.append(path)
        _FileParser(self, path, text, defaults, depth).parse()


class _FileParser:
    def __init__(
        self,
        reader: _LogrotateReader,
        path: str,
        text: str,
        defaults: RotateOptions,
        depth: int,
    ):
        self.reader = reader
        self.path = path
        self.lines: deque[tuple[int, str]] = deque(
            enumerate(text.splitlines(), start=1)
        )
        self.defaults = defaults
        self.depth = depth
        self.rule: LogrotateRule | None = None
        self.glob_start: int | None = None
        self.glob_text: list[str] = []

    def parse(self) -> None:
        while self.lines:
            number, raw = self.lines.popleft()
            stripped = raw.strip()
            if self.glob_start is not None:
                self._continue_glob(number, raw, stripped)
            elif not stripped or stripped.startswith("#"):
                continue
            elif self.rule is None and stripped[0] in "/\"'~":
                self.glob_start = number
                self.glob_text = []
                self._continue_glob(number, raw, stripped)
            elif stripped.startswith("}"):
                self._close_block(number, stripped)
            else:
                self._directive(number, stripped)
        if self.glob_start is not None:
            self.reader.problem(
                self.path, self.glob_start, "missing '{' after log file names"
            )
        if self.rule is not None:
            self.reader.problem(self.path, self.rule.line, "missing '}' at end of file")
            self.reader.config.rules.append(self.rule)

    def _continue_glob(self, number: int, raw: str, stripped: str) -> None:
        if stripped.startswith("#"):
            return
        if "{" not in raw:
            self.glob_text.append(raw)
            return
        before, after = raw.split("{", 1)
        self.glob_text.append(before)
        start = self.glob_start or number
        self.glob_start = None
        try:
            patterns = shlex.split(" ".join(self.glob_text))
        except ValueError as exc:
            self.reader.problem(self.path, start, f"cannot parse file names: {exc}")
            patterns = []
        self.rule = LogrotateRule(
            self.path, start, patterns, copy.deepcopy(self.defaults)
        )
        if after.strip():
            self.lines.appendleft((number, after))

    def _close_block(self, number: int, stripped: str) -> None:
        if self.rule is None:
            self.reader.problem(self.path, number, "unexpected '}'")
            return
        self.reader.config.rules.append(self.rule)
        self.rule = None
        rest = stripped[1:].strip()
        if rest:
            self.lines.appendleft((number, rest))

    def _directive(self, number: int, stripped: str) -> None:
        """Apply one line of directives.

        As in logrotate, a line may contain several flag keywords and end
        with the ``}`` that closes the block. A keyword that takes a value
        uses the rest of the line.
        """
        words = stripped.replace("=", " ", 1).split()
        while words and words[0] in FLAG_KEYWORDS:
            self._flag(number, words.pop(0))
        if words and words[0].startswith("}"):
            self._close_block(number, " ".join(words))
            return
        if not words:
            return
        keyword, arguments = words[0], words[1:]
        options = self.rule.options if self.rule is not None else self.defaults
        if keyword in SCRIPT_KEYWORDS:
            self._read_script(keyword, number)
        elif keyword == "include" and self.rule is None:
            self._include(number, arguments)
        elif keyword == "create":
            options.create = self._create_mode(number, stripped)
        elif keyword == "su" and arguments:
            options.su = (arguments[0], arguments[1] if len(arguments) > 1 else None)

    def _flag(self, number: int, keyword: str) -> None:
        options = self.rule.options if self.rule is not None else self.defaults
        if keyword == "copytruncate":
            options.copytruncate = True
            options.copytruncate_at = f"{self.path}:{number}"
        elif keyword in ("nocopytruncate", "renamecopy"):
            options.copytruncate = False
        elif keyword == "nocreate":
            options.create = None

    def _read_script(self, keyword: str, number: int) -> None:
        body = []
        while self.lines:
            _line, raw = self.lines.popleft()
            words = raw.split()
            if words and words[0] == "endscript":
                break
            body.append(raw)
        else:
            self.reader.problem(self.path, number, f"{keyword} has no endscript")
        if self.rule is not None:
            self.rule.scripts[keyword] = RotateScript(keyword, "\n".join(body), number)

    def _include(self, number: int, arguments: list[str]) -> None:
        if not arguments:
            self.reader.problem(self.path, number, "include names no path")
            return
        if self.depth >= MAX_INCLUDE_DEPTH:
            self.reader.problem(self.path, number, "include nesting too deep")
            return
        self.reader.read_path(arguments[0], self.defaults, self.depth + 1)

    def _create_mode(self, number: int, stripped: str) -> CreateMode:
        try:
            words = shlex.split(stripped)[1:]
        except ValueError:
            words = stripped.split()[1:]
        mode = owner = group = None
        if len(words) >= 3:
            mode, owner, group = words[:3]
        elif len(words) == 2:
            owner, group = words
        elif len(words) == 1:
            mode = words[0]
        try:
            mode_value = int(mode, 8) if mode is not None else None
        except ValueError:
            self.reader.problem(self.path, number, f"invalid create mode {mode!r}")
            mode_value = None
        return CreateMode(mode_value, owner, group, number, self.path)
