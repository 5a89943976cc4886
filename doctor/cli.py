"""Command-line interface: parse options, run the engine, print a report.

The commands stay thin: discovery, facts, checks and reports live in their
own modules, imported only by the commands that need them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from doctor import __version__

app = typer.Typer(
    name="gunicorn-doctor",
    help="Diagnose a Gunicorn deployment: venv, app import, config, and more.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

EXIT_USAGE = 2


class OutputFormat(StrEnum):
    rich = "rich"
    plain = "plain"
    json = "json"
    markdown = "markdown"
    junit = "junit"
    sarif = "sarif"


class FailLevel(StrEnum):
    info = "info"
    warning = "warning"
    error = "error"


AppArg = Annotated[
    str | None,
    typer.Argument(
        help="The WSGI app as gunicorn takes it: module:app, module:create_app().",
        show_default=False,
    ),
]
ChdirOpt = Annotated[
    str | None,
    typer.Option("--chdir", help="Directory gunicorn runs in.", show_default=False),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="Gunicorn config file, as passed to gunicorn -c."
    ),
]
VenvOpt = Annotated[
    str | None, typer.Option("--venv", help="The deployment's virtualenv directory.")
]
UnitOpt = Annotated[
    str | None, typer.Option("--unit", help="The systemd unit file of the service.")
]
RootOpt = Annotated[
    str | None,
    typer.Option(
        "--root",
        help="Look up every path and user under this directory (a fixture tree"
        " or an unpacked container image) instead of /.",
    ),
]
StaticOpt = Annotated[
    bool,
    typer.Option(
        "--static",
        help="Execute nothing from the target: no config execution, no import.",
    ),
]


class TriageFormat(StrEnum):
    rich = "rich"
    plain = "plain"
    json = "json"
    markdown = "markdown"


class ListingFormat(StrEnum):
    rich = "rich"
    plain = "plain"
    json = "json"


TriageFormatOpt = Annotated[
    TriageFormat,
    typer.Option("--format", "-f", help="Output format; rich falls back to plain."),
]
FormatOpt = Annotated[
    ListingFormat,
    typer.Option("--format", "-f", help="Output format; rich falls back to plain."),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show timings and tracebacks.")
]
NginxOpt = Annotated[
    str | None,
    typer.Option(
        "--nginx", help="nginx's main config file (default: /etc/nginx/nginx.conf)."
    ),
]


SinceOpt = Annotated[
    str,
    typer.Option(
        "--since",
        help="Read log lines newer than this: 30m, 1h, 2d, or 2026-12-04 15:00.",
    ),
]
LogBytesOpt = Annotated[
    str,
    typer.Option(
        "--log-bytes", help="Read at most this much from the end of each log: 4m."
    ),
]
PathOpt = Annotated[
    str, typer.Option("--path", help="Path of the request sent to each bind.")
]


def output_file_option(flag: str, what: str):
    """Build the annotation of an --output-FORMAT option."""
    return Annotated[
        Path | None,
        typer.Option(flag, help=f"Also write the report as {what} to this file."),
    ]


def _finite_seconds(value: float | None) -> float | None:
    """Reject nan and inf, which click's float type and its range accept."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(
            f"{value} is not a number of seconds; give one such as 30"
        )
    return value


PidOpt = Annotated[
    int | None,
    typer.Option(
        "--pid", help="Examine the running gunicorn master with this pid.", min=1
    ),
]
ProbeTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--probe-timeout",
        callback=_finite_seconds,
        help="Seconds a probe that runs the target's Python may take.",
        min=0.1,
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gunicorn-doctor {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version.",
        ),
    ] = False,
) -> None:
    """Diagnose a Gunicorn deployment behind nginx and systemd."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"gunicorn-doctor: error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def _discovery_options(app_spec, chdir, config, venv, unit, root, pid=None, nginx=None):
    import os

    from doctor.target import DiscoveryOptions

    try:
        cwd = os.getcwd()
    except OSError as exc:
        raise _fail(
            f"the current directory cannot be read ({exc.strerror}), for example"
            " because it was deleted; cd to an existing directory and run again"
        ) from None
    return DiscoveryOptions(
        app=app_spec,
        chdir=chdir,
        config=config,
        venv=venv,
        unit=unit,
        root=root,
        pid=pid,
        nginx=nginx,
        cwd=cwd,
    )


def _discover(options):
    from doctor.target import DiscoveryError, discover

    try:
        return discover(options)
    except DiscoveryError as exc:
        raise _fail(str(exc)) from None


def _discover_all(options):
    from doctor.target import DiscoveryError, discover_all

    try:
        return discover_all(options)
    except DiscoveryError as exc:
        raise _fail(str(exc)) from None


def _load_registry_or_fail():
    from doctor.registry import RegistryError, load_registry

    try:
        return load_registry()
    except RegistryError as exc:
        raise _fail(str(exc)) from None


def _reject_unknown_names(registry, names: list[str]) -> None:
    unknown = registry.unknown_names(names)
    if unknown:
        raise _fail(
            f"unknown check id or area: {', '.join(unknown)};"
            " run 'gunicorn-doctor list' for the ids"
        )


def _split_names(values: list[str] | None) -> list[str]:
    names = []
    for value in values or []:
        names.extend(n.strip() for n in value.split(",") if n.strip())
    return names


@app.command()
def check(
    app_spec: AppArg = None,
    chdir: ChdirOpt = None,
    config: ConfigOpt = None,
    venv: VenvOpt = None,
    unit: UnitOpt = None,
    root: RootOpt = None,
    static: Annotated[
        bool | None,
        typer.Option(
            "--static/--no-static",
            help="Execute nothing from the target: no config execution, no import,"
            " no probes, no process table.",
            show_default=False,
        ),
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select",
            help="Run only these check ids or areas (repeatable, comma-separated).",
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore",
            help="Skip these check ids or areas (repeatable, comma-separated).",
        ),
    ] = None,
    fail_on: Annotated[
        FailLevel | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 when a finding reaches this severity [default: error].",
            show_default=False,
        ),
    ] = None,
    exit_zero: Annotated[
        bool,
        typer.Option("--exit-zero", help="Exit 0 even when findings reach --fail-on."),
    ] = False,
    output_format: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="Output format on stdout [default: rich, plain when not a terminal].",
            show_default=False,
        ),
    ] = None,
    output_json: output_file_option("--output-json", "JSON") = None,
    output_sarif: output_file_option("--output-sarif", "SARIF 2.1.0") = None,
    output_junit: output_file_option("--output-junit", "JUnit XML") = None,
    output_markdown: output_file_option("--output-markdown", "Markdown") = None,
    ascii_only: Annotated[
        bool, typer.Option("--ascii", help="Use ASCII marks instead of ✓ ! ✗.")
    ] = False,
    check_timeout: Annotated[
        float | None,
        typer.Option(
            "--check-timeout",
            callback=_finite_seconds,
            help="Seconds one check may run [default: 60].",
            min=0.1,
            show_default=False,
        ),
    ] = None,
    probe_timeout: Annotated[
        float | None,
        typer.Option(
            "--probe-timeout",
            callback=_finite_seconds,
            help="Seconds a probe that runs the target's Python may take"
            " [default: 20].",
            min=0.1,
            show_default=False,
        ),
    ] = None,
    verbose: VerboseOpt = False,
    pid: PidOpt = None,
    nginx: NginxOpt = None,
    lb_idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--lb-idle-timeout",
            callback=_finite_seconds,
            help="Idle timeout in seconds of a load balancer in front (e.g. 60).",
            min=0,
        ),
    ] = None,
    all_masters: Annotated[
        bool,
        typer.Option(
            "--all", help="Examine every running gunicorn master, each on its own."
        ),
    ] = False,
    since: SinceOpt = "1h",
    log_bytes: LogBytesOpt = "4m",
    path: PathOpt = "/",
) -> None:
    """Run the checks and report problems with evidence and fixes.

    Options not given on the command line come from the project's
    configuration: [tool.gunicorn-doctor] in pyproject.toml, or
    .gunicorn-doctor.toml, found from the deployment directory upward.
    """
    from doctor import headstart
    from doctor.context import Options
    from doctor.findings import Severity
    from doctor.projectconfig import merge_options
    from doctor.reports import render, render_many

    outputs = {
        "json": output_json,
        "sarif": output_sarif,
        "junit": output_junit,
        "markdown": output_markdown,
    }
    _check_output_paths(outputs)
    discovery = _discovery_options(
        app_spec, chdir, config, venv, unit, root, pid=pid, nginx=nginx
    )
    targets = _discover_all(discovery) if all_masters else [_discover(discovery)]
    tool = _load_tool_config(targets[0])
    given = {
        "select": select,
        "ignore": ignore,
        "fail_on": fail_on.value if fail_on else None,
        "static": static,
        "format": output_format.value if output_format else None,
        "check_timeout": check_timeout,
        "probe_timeout": probe_timeout,
        "lb_idle_timeout": lb_idle_timeout,
    }
    chosen = merge_options(given, tool)
    selected, ignored = _split_names(chosen["select"]), _split_names(chosen["ignore"])
    # With every check selected, the settings probe (the slowest step, a
    # child process) is known to be needed before the registry is even
    # loaded, so it starts first and runs while the checks are set up.
    everything = not selected and not ignored
    registry = None
    if not everything:
        registry = _load_registry_or_fail()
        _reject_unknown_names(registry, selected + ignored)
    options = Options(
        static=chosen["static"],
        probe_timeout=chosen["probe_timeout"],
        verbose=verbose,
        import_app=True,
        lb_idle_timeout=chosen["lb_idle_timeout"],
    )
    _window_options(options, since, log_bytes, path)
    if all_masters or not everything:
        headstart.discard()
    reports = []
    for target in targets:
        examined = _examine(
            target,
            registry,
            options,
            selected=selected,
            ignored=ignored,
            check_timeout=chosen["check_timeout"],
            fail_on=Severity(chosen["fail_on"]),
            tool=tool,
            discovery=discovery,
        )
        registry = examined.registry
        reports.append(examined.report)
    if exit_zero:
        # The report states the status the process exits with.
        for report in reports:
            report.exit_code = 0
    style = {"ascii_only": ascii_only, "verbose": verbose}
    try:
        if all_masters:
            text = render_many(reports, chosen["format"], **style)
        else:
            text = render(reports[0], chosen["format"], **style)
        _write_outputs(reports, outputs, all_masters=all_masters)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if text is not None:
        sys.stdout.write(text + "\n")
    if exit_zero:
        raise typer.Exit(0)
    raise typer.Exit(max(report.exit_code for report in reports))


def _load_tool_config(target):
    """Load the project's gunicorn-doctor configuration, or exit 2 when it is invalid."""
    from doctor.projectconfig import ToolConfigError, load_tool_config

    start = target.chdir_host if target.chdir is not None else None
    if start is None:
        return None
    try:
        return load_tool_config(start, root=target.fs.root)
    except ToolConfigError as exc:
        raise _fail(str(exc)) from None


def _check_output_paths(paths: dict) -> None:
    """Exit 2 before any work when an --output-FORMAT file cannot be written."""
    from doctor.reports import output_path_problem

    problem = output_path_problem(paths)
    if problem:
        raise _fail(problem)


def _write_outputs(reports, paths: dict, *, all_masters: bool) -> None:
    """Write the report to every --output-FORMAT file given."""
    from doctor.reports import render, render_many

    for fmt, path in paths.items():
        if path is None:
            continue
        if all_masters:
            text = render_many(reports, fmt)
        else:
            text = render(reports[0], fmt)
        try:
            path.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"--output-{fmt} {path}: cannot write: {exc.strerror}"
            ) from None


@dataclass
class _Examined:
    report: object
    registry: object


def _examine(
    target,
    registry,
    options,
    *,
    selected,
    ignored,
    check_timeout,
    fail_on,
    tool=None,
    discovery=None,
) -> _Examined:
    """Run the selected checks on one target and build its report.

    ``discovery`` is given when the run may take over the Context whose
    settings probe ``doctor.headstart`` started before typer was imported.
    """
    from dataclasses import replace

    from doctor import headstart
    from doctor.context import Context
    from doctor.findings import exit_code_for
    from doctor.reports import Report
    from doctor.runner import run_checks

    options = replace(options)
    ctx = None
    if registry is None and discovery is not None:
        ctx = headstart.claim(discovery, target, options)
    started_early = ctx is not None
    if ctx is None:
        ctx = Context(target, options)
    if registry is None:
        if not options.static and not started_early:
            ctx.prefetch("settings")
            headstart.prefetch_settings_free(ctx)
        registry = _load_registry_or_fail()
        specs = registry.select(selected, ignored)
    else:
        specs = registry.select(selected, ignored)
        options.import_app = any("app_import" in spec.needs for spec in specs)
        if not options.static and any(
            {"settings", "venv", "app_import"} & set(spec.needs) for spec in specs
        ):
            ctx.prefetch("settings")
    findings = run_checks(ctx, specs, timeout=check_timeout)
    if tool is not None:
        from datetime import date

        from doctor.projectconfig import apply_waivers

        findings = apply_waivers(findings, tool, today=date.today())
    notes = list(target.notes) + [
        f"plugin failed to load: {e}" for e in registry.load_errors
    ]
    settings = ctx.peek("settings")
    if settings is not None and settings.estimated:
        notes.append(f"settings are a static estimate ({settings.estimate_reason})")
    report = Report(
        findings=findings,
        exit_code=exit_code_for(findings, fail_on),
        header=target.header(),
        target=target.to_dict(),
        notes=notes,
        checks=specs,
    )
    return _Examined(report=report, registry=registry)


def _window_options(options, since: str, log_bytes: str, path: str) -> None:
    from doctor.timespec import parse_since, parse_size

    try:
        options.since = parse_since(since)
    except ValueError as exc:
        raise _fail(f"--since: {exc}") from None
    try:
        options.log_bytes = parse_size(log_bytes)
    except ValueError as exc:
        raise _fail(f"--log-bytes: {exc}") from None
    if not path.startswith("/"):
        raise _fail(f"--path {path!r} must start with '/', e.g. --path /health")
    options.probe_path = path


@app.command()
def triage(
    app_spec: AppArg = None,
    chdir: ChdirOpt = None,
    config: ConfigOpt = None,
    venv: VenvOpt = None,
    unit: UnitOpt = None,
    root: RootOpt = None,
    pid: PidOpt = None,
    nginx: NginxOpt = None,
    since: SinceOpt = "1h",
    log_bytes: LogBytesOpt = "4m",
    path: PathOpt = "/",
    through_nginx: Annotated[
        bool,
        typer.Option(
            "--through-nginx",
            help="Also send the request to the addresses nginx listens on here.",
        ),
    ] = False,
    output_format: TriageFormatOpt = TriageFormat.rich,
    ascii_only: Annotated[
        bool, typer.Option("--ascii", help="Use ASCII marks only.")
    ] = False,
    probe_timeout: ProbeTimeoutOpt = 20.0,
) -> None:
    """Print why nginx answers 502: one verdict, its evidence, the fix, and what was ruled out.

    Exits with status 1 when a cause of 502 responses was found.
    """
    from doctor.context import Context, FactUnavailable, Options
    from doctor.reports import triage_report

    options = Options(probe_timeout=probe_timeout, through_nginx=through_nginx)
    _window_options(options, since, log_bytes, path)
    target = _discover(
        _discovery_options(
            app_spec, chdir, config, venv, unit, root, pid=pid, nginx=nginx
        )
    )
    ctx = Context(target, options)
    try:
        result = ctx.fact("triage")
    except FactUnavailable as exc:
        raise _fail(exc.reason) from None
    header, data = target.header(), target.to_dict()
    if output_format is TriageFormat.json:
        typer.echo(triage_report.render_triage_json(result, header, data))
    elif output_format is TriageFormat.markdown:
        typer.echo(triage_report.render_triage_markdown(result, header, data))
    else:
        triage_report.print_triage(
            result,
            header,
            data,
            plain=output_format is TriageFormat.plain,
            ascii_only=ascii_only,
        )
    raise typer.Exit(1 if result.winner else 0)


@app.command("config")
def show_config(
    app_spec: AppArg = None,
    chdir: ChdirOpt = None,
    config: ConfigOpt = None,
    venv: VenvOpt = None,
    unit: UnitOpt = None,
    root: RootOpt = None,
    static: StaticOpt = False,
    output_format: FormatOpt = ListingFormat.rich,
    probe_timeout: ProbeTimeoutOpt = 20.0,
    pid: PidOpt = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list settings left at their default.")
    ] = False,
    show_tool_config: Annotated[
        bool,
        typer.Option(
            "--show-tool-config",
            help="Print gunicorn-doctor's own project configuration instead: each"
            " option of 'check' with its value and source, and the waivers.",
        ),
    ] = False,
) -> None:
    """Print the effective gunicorn settings and where each value came from.

    Exits with status 1 when the configuration did not load, and with status 2
    when --show-tool-config finds an invalid project configuration.
    """
    from doctor.context import Context, FactUnavailable, Options
    from doctor.redact import redact_value

    target = _discover(
        _discovery_options(app_spec, chdir, config, venv, unit, root, pid=pid)
    )
    if show_tool_config:
        from datetime import date

        from doctor import projectconfig
        from doctor.registry import RegistryError, load_registry

        try:
            tool = projectconfig.ToolConfig()
            if target.chdir is not None:
                tool = projectconfig.load_tool_config(
                    target.chdir_host, root=target.fs.root
                )
        except projectconfig.ToolConfigError as exc:
            raise _fail(str(exc)) from None
        try:
            known = set(load_registry().checks)
        except RegistryError:
            known = None
        description = projectconfig.describe_tool_config(
            tool,
            projectconfig.DEFAULTS,
            today=date.today(),
            known_checks=known,
        )
        if output_format is ListingFormat.json:
            import json

            typer.echo(json.dumps(description, indent=2))
        else:
            projectconfig.print_tool_config(
                description, plain=output_format is ListingFormat.plain
            )
        return
    ctx = Context(target, Options(static=static, probe_timeout=probe_timeout))
    try:
        settings = ctx.fact("settings")
    except FactUnavailable as exc:
        raise _fail(exc.reason) from None
    if output_format is ListingFormat.json:
        import json

        data = redact_value(settings.to_dict())
        if settings.estimated:
            data["estimate_reason"] = settings.estimate_reason
        data["error"] = settings.error
        typer.echo(json.dumps(data, indent=2, default=repr))
    else:
        from doctor.config_view import print_settings

        print_settings(
            settings, show_all=show_all, plain=output_format is ListingFormat.plain
        )
    # The values shown are gunicorn's defaults and whatever loaded before the
    # failure, so a script must not take them for the deployment's settings.
    if settings.error:
        raise typer.Exit(1)


@app.command("list")
def list_checks(
    output_format: FormatOpt = ListingFormat.rich,
) -> None:
    """List the registered checks: id, area and title."""
    from doctor.registry import RegistryError, load_registry

    try:
        registry = load_registry()
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    if output_format is ListingFormat.json:
        import json

        rows = [
            {"id": s.id, "area": s.area, "title": s.title, "source": s.source}
            for s in registry.checks.values()
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max((len(s.id) for s in registry.checks.values()), default=0)
    for spec in registry.checks.values():
        typer.echo(f"{spec.id.ljust(width)}  {spec.area:<9}  {spec.title}")
    for problem in registry.load_errors:
        typer.echo(f"plugin failed to load: {problem}", err=True)


@app.command()
def explain(
    check_id: Annotated[
        str, typer.Argument(metavar="ID", help="A check id from 'list'.")
    ],
) -> None:
    """Print the documentation of one check."""
    from doctor.registry import RegistryError, load_registry

    try:
        registry = load_registry()
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    spec = registry.find(check_id)
    if spec is None:
        raise _fail(
            f"no check has the id {check_id!r}; run 'gunicorn-doctor list' for the ids"
        )
    typer.echo(f"{spec.id} ({spec.area}): {spec.title}\n")
    typer.echo(spec.docs)
    typer.echo(f"\nDefined in {spec.source}.")


def run() -> None:
    try:
        app(prog_name="gunicorn-doctor")
    except OSError as exc:
        # Writing the report failed (a full disk, a closed terminal); the
        # report is lost, so report that in one line rather than a traceback.
        try:
            sys.stderr.write(
                f"gunicorn-doctor: error: cannot write the report: {exc.strerror or exc}\n"
            )
        except OSError:
            pass
        sys.exit(EXIT_USAGE)
