"""Effective gunicorn settings, resolved by the target's own gunicorn.

The settings probe runs under the venv's interpreter with the service's argv,
environment and working directory, so the values are those gunicorn itself
would use. When it cannot run (no venv, gunicorn missing, static mode, a
probe failure) the static reader estimates them and says why.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from doctor.context import Context, FactUnavailable, fact
from doctor.facts.execution import probe_environment, service_identity
from doctor.probes import ProbeResult
from doctor.settings_model import EffectiveSettings, SettingSource
from doctor.static_settings import ArgvError, estimate_settings, parse_argv


@fact("settings")
def settings(ctx: Context) -> EffectiveSettings:
    target = ctx.target
    if target.chdir is None:
        raise FactUnavailable("the deployment directory is unknown; pass --chdir")
    if ctx.static:
        return estimate(ctx, "static mode executes nothing from the target")
    # Only the venv's layout is needed here, not the venv probe, so that the
    # two child processes run at the same time.
    try:
        venv = ctx.fact("venv_layout")
    except FactUnavailable as exc:
        return estimate(ctx, exc.reason)
    if not venv.exists:
        return estimate(ctx, f"the virtualenv {venv.path} does not exist")
    if not venv.runnable:
        return estimate(
            ctx, f"the venv's interpreter cannot run: {venv.interpreter_problem}"
        )
    resolved, failure = _ask_gunicorn(ctx, venv)
    if resolved is not None:
        return resolved
    estimated = estimate(ctx, failure)
    estimated.load_failure = _load_failure(settings_probe(ctx).result, ctx)
    return estimated


def _load_failure(result, ctx: Context) -> str | None:
    """Describe a probe that started but did not survive loading the config."""
    if result.data is not None or result.returncode is None and not result.timed_out:
        return None
    if result.timed_out:
        return (
            f"loading the configuration did not finish within"
            f" {ctx.options.probe_timeout:g} s"
        )
    return result.error


def _probe_argv(ctx: Context) -> list[str]:
    """Return the service's argv with absolute config paths mapped under the root."""
    argv = list(ctx.target.argv)
    if ctx.fs.is_live:
        return argv
    for index, token in enumerate(argv[:-1]):
        if token in ("-c", "--config") and argv[index + 1].startswith("/"):
            argv[index + 1] = str(ctx.fs.host(argv[index + 1]))
    return argv


@dataclass
class SettingsRun:
    """The settings probe's result, and whether an app import in it hung."""

    result: ProbeResult
    import_timed_out: bool = False
    import_stderr: str = ""


@fact("settings_probe")
def settings_probe_fact(ctx: Context) -> SettingsRun:
    """Run the settings probe once under the venv's interpreter."""
    argv = _probe_argv(ctx)
    if not ctx.options.import_app:
        return SettingsRun(_run_settings_probe(ctx, argv))
    # One process loads the config and then imports the app, as gunicorn does,
    # so that what the config file changes (os.environ, sys.path) is in
    # effect for the import too.
    combined = _run_settings_probe(ctx, ["--import-app", "--", *argv], ("import",))
    if not combined.timed_out:
        return SettingsRun(combined)
    # The config or the import hung. The settings alone tell which.
    alone = _run_settings_probe(ctx, argv)
    if alone.timed_out:
        return SettingsRun(alone)
    return SettingsRun(alone, import_timed_out=True, import_stderr=combined.stderr)


def _run_settings_probe(
    ctx: Context, argv: list[str], with_probes: tuple[str, ...] = ()
) -> ProbeResult:
    from doctor.probes import run_probe

    venv = ctx.fact("venv_layout")
    run_as = service_identity(ctx)
    return run_probe(
        str(venv.interpreter_host),
        "settings",
        argv,
        with_probes=with_probes,
        cwd=str(ctx.target.chdir_host),
        env=probe_environment(ctx),
        user=run_as.uid,
        group=run_as.gid,
        timeout=ctx.options.probe_timeout,
        cancel=ctx.cancelled,
    )


def settings_probe(ctx: Context) -> SettingsRun:
    """Return the settings probe's run, computing it on first use."""
    return ctx.fact("settings_probe")


def _ask_gunicorn(ctx: Context, venv) -> tuple[EffectiveSettings | None, str | None]:
    result = settings_probe(ctx).result
    data = result.data
    if data is not None and not data.get("gunicorn_version"):
        return None, f"gunicorn is not installed in {venv.path}"
    if (
        data is None
        or not isinstance(data.get("settings"), dict)
        or not data["settings"]
    ):
        return None, result.error or _probe_failure(data)
    return _from_probe(ctx, data), None


def _probe_failure(data: dict | None) -> str:
    error = (data or {}).get("error") or {}
    return f"the settings probe failed: {error.get('type')}: {error.get('message')}"


def _from_probe(ctx: Context, data: dict) -> EffectiveSettings:
    fs = ctx.fs
    values = dict(data["settings"])
    sources = {}
    for name, src in (data.get("sources") or {}).items():
        path = src.get("path")
        sources[name] = SettingSource(
            src.get("kind", "default"),
            fs.display(path) if path else None,
            src.get("line"),
        )
    worker = data.get("worker_class") or {}
    config_file = data.get("config_file")
    error = _config_error(data.get("error"), config_file)
    if error and error.get("path"):
        error = {**error, "path": fs.display(error["path"])}
    non_literal = {name: values[name] for name in data.get("non_literal") or []}
    return EffectiveSettings(
        values=values,
        sources=sources,
        estimated=False,
        gunicorn_version=data.get("gunicorn_version"),
        known=frozenset(values),
        config_file=fs.display(config_file) if config_file else None,
        config_origin=data.get("config_origin"),
        unknown_names=[
            (u["name"], u.get("line")) for u in data.get("unknown_names") or []
        ],
        non_literal=non_literal,
        app_uri=data.get("app_uri"),
        worker_class_runs=_short_worker_class(worker.get("runs")),
        worker_class_error=worker.get("error"),
        error=error,
        cli_flags=data.get("cli_flags") or {},
    )


def _config_error(error: dict | None, config_file: str | None) -> dict | None:
    """Point a config-stage error at the config file when the probe could not.

    Python rejects source that contains NUL bytes before it runs a line of
    it, with SyntaxError in 3.11.7 and ValueError in older releases. No
    traceback frame then names the file, so the probe reports its own pseudo
    file name, such as ``<probe>``, or none. The static reader calls this
    error BinaryFile.
    """
    if not error or error.get("stage") != "config" or not config_file:
        return error
    binary = error.get("type") in ("SyntaxError", "ValueError") and "null bytes" in (
        error.get("message") or ""
    )
    path = error.get("path")
    if path and not path.startswith("<") and not binary:
        return error
    error = {**error, "path": path if binary and path else config_file, "line": None}
    if binary:
        error["type"] = "BinaryFile"
        error["message"] = "the file contains NUL bytes"
    return error


def _short_worker_class(path: str | None) -> str | None:
    """Map gunicorn's class paths back to the names users write (``gthread``)."""
    if not path:
        return path
    known = {
        "gunicorn.workers.sync.SyncWorker": "sync",
        "gunicorn.workers.gthread.ThreadWorker": "gthread",
        "gunicorn.workers.ggevent.GeventWorker": "gevent",
        "gunicorn.workers.geventlet.EventletWorker": "eventlet",
        "gunicorn.workers.gtornado.TornadoWorker": "tornado",
    }
    return known.get(path, path)


def estimate(ctx: Context, reason: str | None) -> EffectiveSettings:
    """Estimate the settings statically, recording ``reason`` in the result."""
    target = ctx.target
    fs = ctx.fs
    environment = probe_environment(ctx)
    config, origin = _config_location(ctx, environment)
    host_path = None
    display = None
    if config is not None:
        display = (
            config if config.startswith("/") else str(Path(target.chdir.value) / config)
        )
        host_path = fs.host(display)
    estimate = estimate_settings(
        target.argv,
        env_args=environment.get("GUNICORN_CMD_ARGS"),
        config_host_path=host_path,
        config_display_path=display,
        config_origin=origin,
    )
    estimate.estimate_reason = reason or "the target's gunicorn could not be asked"
    return estimate


def _config_location(
    ctx: Context, environment: dict[str, str]
) -> tuple[str | None, str | None]:
    """Pick the config file gunicorn would load: -c, then GUNICORN_CMD_ARGS, then ./gunicorn.conf.py."""
    try:
        cli = parse_argv(ctx.target.argv)
    except ArgvError:
        cli = None
    if cli and cli.values.get("config"):
        return _strip_prefix(cli.values["config"]), "cli"
    env_args = environment.get("GUNICORN_CMD_ARGS")
    if env_args:
        try:
            env = parse_argv(shlex.split(env_args))
        except (ArgvError, ValueError):
            env = None
        if env and env.values.get("config"):
            return _strip_prefix(env.values["config"]), "env"
    if (ctx.target.chdir_host / "gunicorn.conf.py").is_file():
        return "gunicorn.conf.py", "default"
    return None, None


def _strip_prefix(location: str) -> str:
    return location.removeprefix("file:")
