"""Checks of the gunicorn configuration as gunicorn itself resolves it."""

from __future__ import annotations

import difflib

from doctor import Context, FactUnavailable, Location, check, error, info, ok, warning

SYNC_CLASSES = ("sync", "gunicorn.workers.sync.SyncWorker")
GREEN_CLASSES = ("gevent", "eventlet", "gevent_wsgi", "gevent_pywsgi")
CONFIG_ORIGINS = {
    "cli": "via -c on the command line",
    "env": "via -c in GUNICORN_CMD_ARGS",
    "default": "as ./gunicorn.conf.py in the working directory",
}


def _where(settings) -> str:
    if settings.estimated:
        return f"static estimate: {settings.estimate_reason}"
    return f"resolved by gunicorn {settings.gunicorn_version}"


def _loaded_settings(ctx: Context):
    """Return the settings, or skip when gunicorn would exit before using them.

    After a failure gunicorn's view of the settings is partial (the rest of
    the config file, GUNICORN_CMD_ARGS and the command line were never
    applied), and config-file reports the failure itself.
    """
    settings = ctx.fact("settings")
    if settings.error:
        raise FactUnavailable("gunicorn did not finish loading the configuration")
    return settings


def _error_location(settings) -> Location | None:
    error_info = settings.error or {}
    path = error_info.get("path") or settings.config_file
    if not path:
        return None
    return Location(path, error_info.get("line"))


@check(
    "config-file",
    area="config",
    title="The config file loads",
    needs=("settings",),
)
def config_file(ctx: Context):
    """Fail when gunicorn could not load its configuration.

    Covers a config file that is missing, unreadable, binary, has a syntax
    error or raises when executed (with file and line), a setting whose
    value gunicorn rejects, and a command line gunicorn does not accept.
    gunicorn exits at start in each case, before it binds anything.
    """
    settings = ctx.fact("settings")
    if settings.load_failure:
        yield _load_failure(ctx, settings)
        return
    problem = settings.error
    if problem:
        yield _config_error(ctx, settings, problem)
        return
    if not settings.config_file:
        yield info(
            "no config file: gunicorn uses its defaults and the command line",
            "Neither -c, GUNICORN_CMD_ARGS nor ./gunicorn.conf.py in the working"
            " directory names a config file.",
        )
        return
    yield ok(f"{settings.config_file} loads ({_where(settings)})")


def _load_failure(ctx: Context, settings):
    """Report a config that hung or ended the process while gunicorn loaded it."""
    path = settings.config_file or "the configuration"
    venv = ctx.target.venv.value if ctx.target.venv else "VENV"
    user = ctx.target.user.value if ctx.target.user else None
    command = f"{venv}/bin/gunicorn --check-config {' '.join(ctx.target.argv)}"
    if user:
        command = f"sudo -u {user} {command}"
    hung = "did not finish" in settings.load_failure
    return error(
        f"gunicorn cannot load {path}: {settings.load_failure}",
        "gunicorn would "
        + ("hang" if hung else "stop")
        + " at start the same way, before it binds anything. Code in the config"
        " file (or in what it imports) "
        + ("waits on something" if hung else "ends the process")
        + ".",
        fix=f"Run the service's command by hand to see where: {command}",
        evidence=[settings.load_failure],
        location=Location(settings.config_file, None) if settings.config_file else None,
    )


def _config_error(ctx: Context, settings, problem: dict):
    stage = problem.get("stage")
    kind = problem.get("type") or "error"
    message = problem.get("message") or ""
    location = _error_location(settings)
    path = (location.path if location else None) or "the config file"
    evidence = [f"{kind}: {message}"]
    if problem.get("traceback") and ctx.options.verbose:
        evidence.append(problem["traceback"])
    if stage == "argv":
        return error(
            "gunicorn rejects its command line",
            f"{message}. gunicorn prints its usage and exits with status 2.",
            fix="Correct the arguments in ExecStart (gunicorn --help lists them).",
            evidence=[f"argv: {' '.join(ctx.target.argv)}", *evidence],
            location=_exec_location(ctx),
        )
    if stage == "settings":
        return error(
            f"gunicorn rejects a setting: {message}",
            "gunicorn exits at start with 'Invalid value for ...'.",
            fix="Give the setting a value of the type gunicorn expects"
            " (gunicorn --help shows each).",
            evidence=evidence,
            location=location,
        )
    if kind == "SyntaxError":
        return error(
            f"{path} has a syntax error at line {problem.get('line')}: {message}",
            "gunicorn prints 'Failed to read config file' and exits with status 1.",
            fix=f"Fix the syntax, then check with: python3 -m py_compile {path}",
            evidence=evidence,
            location=location,
        )
    if kind in ("FileNotFoundError", "RuntimeError") and "exist" in message:
        origin = CONFIG_ORIGINS.get(settings.config_origin, "via -c")
        return error(
            f"the config file {path} does not exist",
            f"gunicorn is told to read {path} ({origin}) and"
            " exits at start because it is missing.",
            fix="Create the file, or point -c at the right path (relative paths"
            " are resolved from the working directory).",
            evidence=evidence,
            location=_exec_location(ctx),
        )
    if kind in ("BinaryFile", "UnicodeDecodeError"):
        return error(
            f"{path} is not a Python source file: {message}",
            "gunicorn executes the config file as Python and fails on it.",
            fix=f"Restore {path} from version control.",
            evidence=evidence,
            location=location,
        )
    if kind in ("PermissionError", "IsADirectoryError"):
        return error(
            f"{path} cannot be read: {message}",
            "gunicorn cannot load its configuration and exits at start.",
            fix=f"Make {path} a readable file for the service's user: chmod 644 {path}",
            evidence=evidence,
            location=location,
        )
    return error(
        f"executing {path} raised {kind}: {message}",
        "gunicorn runs the config file as Python; it prints 'Failed to read"
        " config file' and exits with status 1.",
        fix="Fix the code at the line shown; the config file runs with the"
        " service's user, working directory and environment.",
        evidence=evidence,
        location=location,
    )


def _exec_location(ctx: Context) -> Location | None:
    service = ctx.target.service
    entry = getattr(service, "exec_start_entry", None)
    return Location(entry.path, entry.line) if entry else None


@check(
    "config-unknown-names",
    area="config",
    title="Every name in the config file is a gunicorn setting",
    needs=("settings",),
)
def config_unknown_names(ctx: Context):
    """Warn about names in the config file that gunicorn silently ignores.

    gunicorn reads only the names of its settings from the config file and
    ignores the rest without a word, so a typo such as ``worker`` for
    ``workers`` or ``TIMEOUT`` for ``timeout`` leaves the default in force.
    The list of settings is that of the installed gunicorn version.
    """
    settings = ctx.fact("settings")
    # A "settings" error comes after the file ran, so its names are known.
    if settings.error and settings.error.get("stage") != "settings":
        raise FactUnavailable("gunicorn did not load the config file")
    if not settings.config_file:
        raise FactUnavailable("no config file is in use")
    known = sorted(settings.known)
    findings = []
    for name, line in settings.unknown_names:
        guesses = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
        detail = (
            f"{_version_phrase(settings)} has no setting named {name!r} and"
            " ignores it silently."
        )
        if guesses:
            fix = f"Rename it: {guesses[0]} = ... (did you mean {guesses[0]!r}?)"
            title = f"{name!r} is not a gunicorn setting; did you mean {guesses[0]!r}?"
        else:
            fix = "Remove it, or prefix it with an underscore if it is a helper value."
            title = f"{name!r} is not a gunicorn setting and is ignored"
        findings.append(
            warning(
                title,
                detail,
                fix=fix,
                location=Location(settings.config_file, line),
            )
        )
    if findings:
        yield from findings
        return
    yield ok(f"every setting name in {settings.config_file} is known to gunicorn")


def _version_phrase(settings) -> str:
    if settings.gunicorn_version:
        return f"gunicorn {settings.gunicorn_version}"
    from doctor.settings_model import settings_table

    newest = settings_table()["gunicorn_version"]
    return f"gunicorn {newest} (the newest this doctor knows; the target's is unknown)"


def _worker_class(settings) -> tuple[str, str]:
    configured = str(settings.get("worker_class") or "sync")
    runs = settings.worker_class_runs or configured
    return configured, runs


def _explicit(settings, name: str) -> bool:
    return settings.source(name).kind != "default"


@check(
    "config-worker-settings",
    area="config",
    title="Settings apply to the worker class that runs",
    needs=("settings",),
)
def config_worker_settings(ctx: Context):
    """Flag settings that the worker class in use ignores or overrides.

    ``worker_class = "sync"`` with ``threads > 1`` makes gunicorn run the
    gthread worker instead; ``keepalive`` and ``worker_connections`` do
    nothing with sync workers; ``threads`` does nothing with gevent or
    eventlet workers.
    """
    settings = _loaded_settings(ctx)
    configured, runs = _worker_class(settings)
    threads = settings.get("threads")
    findings = []
    is_sync = runs in SYNC_CLASSES
    if configured in SYNC_CLASSES and isinstance(threads, int) and threads > 1:
        findings.append(
            warning(
                f"worker_class is 'sync' but threads = {threads}: gunicorn runs"
                " gthread workers",
                "With more than one thread gunicorn replaces the sync worker by"
                " gthread, so the class named in the config is not the one"
                " that runs, and keepalive and worker_connections do apply.",
                fix='Say what runs: worker_class = "gthread", or remove threads to'
                " keep sync workers.",
                evidence=[
                    settings.describe("worker_class"),
                    settings.describe("threads"),
                ],
                location=settings.location("threads")
                or settings.location("worker_class"),
            )
        )
    if is_sync:
        for name in ("keepalive", "worker_connections"):
            if _explicit(settings, name):
                findings.append(
                    info(
                        f"{name} = {settings.get(name)!r} is ignored by sync workers",
                        f"Sync workers close each connection after one request"
                        f" and handle one at a time, so {name} has no effect.",
                        fix=f'Remove {name}, or use worker_class = "gthread" if'
                        " you need it.",
                        evidence=[
                            settings.describe(name),
                            f"worker class that runs: {runs}",
                        ],
                        location=settings.location(name),
                    )
                )
    if runs in GREEN_CLASSES and _explicit(settings, "threads"):
        findings.append(
            warning(
                f"threads = {threads!r} is ignored by {runs} workers",
                f"{runs} workers run greenlets, not threads; concurrency comes"
                " from worker_connections.",
                fix="Remove threads and size worker_connections instead.",
                evidence=[
                    settings.describe("threads"),
                    settings.describe("worker_class"),
                ],
                location=settings.location("threads"),
            )
        )
    if findings:
        yield from findings
        return
    yield ok(f"settings fit the {runs} worker class ({_where(settings)})")


@check(
    "config-worker-class",
    area="config",
    title="The worker class can be loaded",
    needs=("settings",),
    executes=True,
)
def config_worker_class(ctx: Context):
    """Fail when gunicorn cannot load the configured worker class.

    ``gevent`` and ``eventlet`` workers need their library installed in the
    venv; the ``eventlet`` worker was deprecated in gunicorn 25 and removed in
    26.0. gunicorn fails at start with "Error: class uri ... invalid or not
    found" in these cases.
    """
    settings = ctx.fact("settings")
    if settings.estimated:
        raise FactUnavailable(
            f"the worker class is loaded only by the target's gunicorn ({settings.estimate_reason})"
        )
    settings = _loaded_settings(ctx)
    configured, runs = _worker_class(settings)
    version = settings.gunicorn_version or ""
    problem = settings.worker_class_error
    location = settings.location("worker_class")
    evidence = [settings.describe("worker_class")]
    if problem:
        fix = _worker_class_fix(ctx, configured, version)
        yield error(
            f"gunicorn {version} cannot load worker class {configured!r}",
            problem,
            fix=fix,
            evidence=[*evidence, problem],
            location=location,
        )
        return
    if configured == "eventlet" and version.split(".")[0] == "25":
        yield warning(
            f"the eventlet worker is deprecated in gunicorn {version} and removed in 26.0",
            "Upgrading gunicorn will stop the service from starting.",
            fix='Move to worker_class = "gevent" (pip install gevent), or pin gunicorn<26.',
            evidence=evidence,
            location=location,
        )
        return
    yield ok(f"worker class {runs} loads in gunicorn {version}")


def _worker_class_fix(ctx: Context, configured: str, version: str) -> str:
    venv = ctx.target.venv
    pip = f"{venv.value}/bin/pip" if venv else "pip"
    if configured == "eventlet":
        major = version.split(".")[0]
        if major.isdigit() and int(major) >= 26:
            return (
                f'gunicorn {version} has no eventlet worker: use worker_class = "gevent"'
                f" and {pip} install gevent, or pin gunicorn<26"
            )
        return f"{pip} install eventlet"
    if configured.startswith("gevent"):
        return f"{pip} install gevent"
    if configured == "tornado":
        return f"{pip} install tornado"
    return "Name a worker class gunicorn has: sync, gthread, gevent, tornado (or a dotted path)."


@check(
    "config-daemon",
    area="config",
    title="gunicorn does not daemonize under systemd",
    needs=("settings",),
)
def config_daemon(ctx: Context):
    """Fail when ``daemon = True`` (or ``-D``) is set for a systemd service.

    A daemonizing gunicorn forks and its first process exits at once; with
    ``Type=simple`` or ``Type=notify`` systemd takes that exit for the end of
    the service, kills what is left and restarts it in a loop.
    """
    settings = _loaded_settings(ctx)
    daemon = settings.get("daemon")
    if not daemon:
        yield ok("daemon is off, so the process manager supervises gunicorn directly")
        return
    evidence = [settings.describe("daemon")]
    location = settings.location("daemon") or _exec_location(ctx)
    fix = (
        "daemon = False in the config file"
        if settings.location("daemon")
        else ("Remove -D/--daemon from ExecStart")
    )
    if ctx.target.service is not None:
        yield error(
            "daemon mode is on while systemd starts gunicorn",
            f"{ctx.target.unit.value} starts gunicorn, which then forks into the"
            " background; systemd sees its main process exit and stops or"
            " restarts the service.",
            fix=fix,
            evidence=evidence,
            location=location,
        )
        return
    yield warning(
        "daemon mode is on",
        "A daemonized gunicorn is not supervised: nothing restarts it when it"
        " dies. Run it under systemd (or another supervisor) without daemon.",
        fix=fix,
        evidence=evidence,
        location=location,
    )
