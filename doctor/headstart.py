"""Start the settings probe of ``check`` before the command line parser loads.

The settings probe, a child process that runs the deployment's Python, loads
its config and imports its app, is the longest step of ``check``. Importing
typer and building the command from its signature take tens of milliseconds
more. So ``begin`` reads the options that choose the target straight from
``sys.argv``, runs the same discovery as the command and starts the probe.
When typer has parsed the command line, the command calls ``claim``: it gets
the started Context when it computed the same target and the same
probe-related options, and otherwise the started work is cancelled.

The reader here is deliberately strict. Any option it does not list, a
malformed value, ``--help``, ``--static``, ``--select``, ``--ignore`` or
``--all`` make it start nothing, and the command then runs as if this module
did not exist.
"""

from __future__ import annotations

import atexit
import importlib
import math
import threading

# Options of ``check`` that take a value, mapped to the field they set here.
# Options mapped to None do not change what starts early. The format, the
# fail level and the output files are read so that nothing starts for values
# the command will reject.
VALUE_OPTIONS = {
    "--chdir": "chdir",
    "--config": "config",
    "-c": "config",
    "--venv": "venv",
    "--unit": "unit",
    "--root": "root",
    "--pid": "pid",
    "--nginx": "nginx",
    "--probe-timeout": "probe_timeout",
    "--fail-on": "fail_on",
    "--format": "format",
    "-f": "format",
    "--output-json": "output_json",
    "--output-sarif": "output_sarif",
    "--output-junit": "output_junit",
    "--output-markdown": "output_markdown",
    "--check-timeout": None,
    "--lb-idle-timeout": None,
    "--since": None,
    "--log-bytes": None,
    "--path": None,
}
# Flags of ``check`` that do not change what starts early.
FLAG_OPTIONS = {"--exit-zero", "--ascii", "--verbose", "-v"}
# Options after which nothing starts early: they select fewer checks, forbid
# executing the target, examine several targets or print help.
DECLINING_OPTIONS = {
    "--static",
    "--no-static",
    "--select",
    "--ignore",
    "--all",
    "--help",
}
# The Options fields that the facts started early read. ``claim`` hands over
# the Context only when the command's Options agree on all of them.
PROBE_OPTION_FIELDS = ("static", "probe_timeout", "import_app")
# Facts that need no settings, gathered while the settings probe runs so that
# only the work that needs the settings remains when it ends. The second
# group reads this host's processes, sockets and running nginx, so only a
# live run gathers it.
SETTINGS_FREE_FACTS = ("requirements", "unit", "logrotate")
LIVE_SETTINGS_FREE_FACTS = (
    "process_table",
    "listen_sockets",
    "listeners",
    "masters",
    "master",
    "nginx",
    "nginx_log",
    "cpu_budget",
    "memory_budget",
    "worker_memory",
)
# Seconds ``discard`` waits for a cancelled probe to be killed and reaped.
CANCEL_WAIT_SECONDS = 2.0

_lock = threading.Lock()
_started: _Started | None = None


class Declined(Exception):
    """Raised by the reader when the command line is not one to start early."""


class _Started:
    """A Context whose facts started before typer parsed the command line."""

    def __init__(self, discovery, context):
        self.discovery = discovery
        self.context = context


def read_arguments(args: list[str]) -> dict[str, str]:
    """Return the values of the target-choosing options of ``check``.

    Raises ``Declined`` for anything that is not a plain run of every check
    on one target. Options mapped to None are read and dropped.
    """
    values: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token == "--":
            positional.extend(args[index:])
            break
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        name, attached = _split_option(token)
        if name in DECLINING_OPTIONS:
            raise Declined(name)
        if name in FLAG_OPTIONS and attached is None:
            continue
        if name not in VALUE_OPTIONS:
            raise Declined(token)
        if attached is None:
            if index == len(args):
                raise Declined(f"{name} has no value")
            attached = args[index]
            index += 1
        if VALUE_OPTIONS[name] is not None:
            values[VALUE_OPTIONS[name]] = attached
    if len(positional) > 1:
        raise Declined("more than one APP argument")
    if positional:
        values["app"] = positional[0]
    return values


def _split_option(token: str) -> tuple[str, str | None]:
    """Split ``--name=value`` and ``-cvalue`` into the option and its value."""
    if token.startswith("--"):
        name, equals, value = token.partition("=")
        return name, value if equals else None
    if len(token) > 2:
        return token[:2], token[2:]
    return token, None


def begin(args: list[str]) -> None:
    """Start the settings probe for ``check ARGS`` when the target is clear.

    Starts nothing, and raises nothing, when the arguments or the target are
    anything but plain: the command reports every problem itself.
    """
    global _started
    try:
        values = read_arguments(args)
        started = _start(values)
    except Declined:
        return
    except Exception:  # noqa: BLE001
        # A problem here is found again, and reported, by the command.
        return
    with _lock:
        _started = started
    atexit.register(discard)


def _start(values: dict[str, str]) -> _Started:
    from doctor.context import FACT_MODULES, Context, FactUnavailable, Options
    from doctor.projectconfig import (
        FORMATS,
        SEVERITIES,
        load_tool_config,
        merge_options,
    )
    from doctor.target import DiscoveryOptions, discover

    outputs = {
        name.removeprefix("output_"): value
        for name, value in values.items()
        if name.startswith("output_")
    }
    if outputs:
        from doctor.reports import output_path_problem

        problem = output_path_problem(outputs)
        if problem:
            raise Declined(problem)
    if values.get("format", "rich") not in FORMATS:
        raise Declined(f"--format {values['format']}")
    if values.get("fail_on", "error") not in SEVERITIES:
        raise Declined(f"--fail-on {values['fail_on']}")
    pid = values.get("pid")
    if pid is not None and (not pid.isdigit() or int(pid) < 1):
        raise Declined(f"--pid {pid}")
    given_timeout = values.get("probe_timeout")
    probe_timeout = None if given_timeout is None else float(given_timeout)
    if probe_timeout is not None and not (
        math.isfinite(probe_timeout) and probe_timeout >= 0.1
    ):
        raise Declined(f"--probe-timeout {given_timeout}")
    discovery = DiscoveryOptions(
        app=values.get("app"),
        chdir=values.get("chdir"),
        config=values.get("config"),
        venv=values.get("venv"),
        unit=values.get("unit"),
        root=values.get("root"),
        pid=None if pid is None else int(pid),
        nginx=values.get("nginx"),
    )
    target = discover(discovery)
    tool = None
    if target.chdir is not None:
        tool = load_tool_config(target.chdir_host, root=target.fs.root)
    chosen = merge_options({"probe_timeout": probe_timeout}, tool)
    if chosen["static"] or chosen["select"] or chosen["ignore"]:
        raise Declined("the project configuration narrows the run")
    context = Context(
        target,
        Options(static=False, probe_timeout=chosen["probe_timeout"], import_app=True),
    )
    # Import the settings fact and read the venv's layout here, so that the
    # thread has little left to do before it starts the probe and does not
    # wait for its turn behind the imports of typer.
    importlib.import_module(FACT_MODULES["settings"])
    try:
        context.fact("venv_layout")
    except FactUnavailable:
        pass
    context.prefetch("settings")
    return _Started(discovery, context)


def claim(discovery, target, options):
    """Return the Context started early for this target and these options.

    Returns None, after cancelling the started work, when the command
    discovered another target or chose other probe options, and None when
    nothing started. The returned Context reads ``options`` from then on.
    """
    global _started
    with _lock:
        started, _started = _started, None
    if started is None:
        return None
    context = started.context
    same_options = all(
        getattr(context.options, name) == getattr(options, name)
        for name in PROBE_OPTION_FIELDS
    )
    if started.discovery != discovery or context.target != target or not same_options:
        _cancel(started)
        return None
    context.options = options
    prefetch_settings_free(context)
    return context


def prefetch_settings_free(context) -> None:
    """Start gathering the facts that do not wait for the settings probe.

    They start once the probe runs and typer is loaded, so that neither the
    probe's start nor the command's parsing waits behind them.
    """
    names = SETTINGS_FREE_FACTS
    if context.fs.is_live:
        names += LIVE_SETTINGS_FREE_FACTS
    context.prefetch(*names)


def discard() -> None:
    """Cancel the work started early that no command claimed."""
    global _started
    with _lock:
        started, _started = _started, None
    if started is not None:
        _cancel(started)


def _cancel(started: _Started) -> None:
    started.context.cancel(wait=CANCEL_WAIT_SECONDS)
