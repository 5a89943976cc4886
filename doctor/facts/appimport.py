"""Import of the app spec, done the way the installed gunicorn would do it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from doctor.context import Context, FactUnavailable, fact
from doctor.facts.execution import probe_environment, service_identity


@dataclass
class ImportResult:
    spec: str
    spec_source: str
    cwd: str
    run_as: str
    data: dict | None
    timed_out: bool
    error: str | None
    stderr: str

    @property
    def status(self) -> str | None:
        return (self.data or {}).get("status")


class _Inputs(NamedTuple):
    spec: str
    spec_source: str
    cwd: str
    pythonpath: str | None
    raw_env: tuple[tuple[str, str], ...]


@fact("app_import")
def app_import(ctx: Context) -> ImportResult:
    if ctx.static:
        raise FactUnavailable("static mode does not import the app")
    venv = ctx.fact("venv_layout")
    if not venv.exists or not venv.runnable:
        raise FactUnavailable(
            f"the venv {venv.path} has no working interpreter to import the app with"
        )
    settings = ctx.fact("settings")
    inputs = _inputs(ctx, settings)
    if not settings.estimated and ctx.options.import_app:
        from doctor.facts.settings import settings_probe

        run = settings_probe(ctx)
        if run.import_timed_out:
            return ImportResult(
                spec=inputs.spec,
                spec_source=inputs.spec_source,
                cwd=inputs.cwd,
                run_as=service_identity(ctx).description,
                data=None,
                timed_out=True,
                error=None,
                stderr=run.import_stderr,
            )
        probe = run.result
        imported = (probe.data or {}).get("import")
        if imported:
            return ImportResult(
                spec=inputs.spec,
                spec_source=inputs.spec_source,
                cwd=inputs.cwd,
                run_as=service_identity(ctx).description,
                data=imported,
                timed_out=False,
                error=None,
                stderr=probe.stderr,
            )
    # The config did not load (or gunicorn is missing), so no worker would
    # import the app; import it on its own to report its state anyway.
    return _import(ctx, venv, inputs)


def _inputs(ctx: Context, settings) -> _Inputs:
    spec, spec_source = _app_spec(ctx, settings)
    pythonpath = settings.get("pythonpath")
    return _Inputs(
        spec=spec,
        spec_source=spec_source,
        cwd=_working_directory(ctx, settings),
        pythonpath=str(pythonpath) if pythonpath else None,
        raw_env=tuple(sorted(_raw_env(settings).items())),
    )


def _import(ctx: Context, venv, inputs: _Inputs) -> ImportResult:
    from doctor.probes import run_probe

    args = ["--app", inputs.spec]
    if inputs.pythonpath:
        args += ["--pythonpath", inputs.pythonpath]
    run_as = service_identity(ctx)
    result = run_probe(
        str(venv.interpreter_host),
        "import",
        args,
        cwd=str(ctx.fs.host(inputs.cwd)),
        env=probe_environment(ctx, dict(inputs.raw_env)),
        user=run_as.uid,
        group=run_as.gid,
        timeout=ctx.options.probe_timeout,
        cancel=ctx.cancelled,
    )
    return ImportResult(
        spec=inputs.spec,
        spec_source=inputs.spec_source,
        cwd=inputs.cwd,
        run_as=run_as.description,
        data=result.data,
        timed_out=result.timed_out,
        error=result.error,
        stderr=result.stderr,
    )


def _app_spec(ctx: Context, settings) -> tuple[str, str]:
    if settings.app_uri:
        app = ctx.target.app
        if app is not None and app.value == settings.app_uri:
            return settings.app_uri, app.source
        source = ctx.target.argv_source
        if settings.app_uri == settings.get("wsgi_app"):
            source = f"wsgi_app ({settings.source('wsgi_app')})"
        return settings.app_uri, source
    if ctx.target.app is not None:
        return ctx.target.app.value, ctx.target.app.source
    raise FactUnavailable(
        "no app spec is known: the service passes no APP_MODULE, the config sets"
        " no wsgi_app, and no app.py or wsgi.py defines one; pass it as APP"
    )


def _working_directory(ctx: Context, settings) -> str:
    """Return the directory gunicorn imports from: its ``chdir`` setting."""
    chdir = settings.get("chdir")
    if settings.source("chdir").kind != "default" and isinstance(chdir, str):
        return chdir
    return ctx.target.chdir.value


def _raw_env(settings) -> dict[str, str]:
    environment = {}
    for item in settings.get("raw_env") or []:
        key, sep, value = str(item).partition("=")
        if sep:
            environment[key] = value
    return environment
