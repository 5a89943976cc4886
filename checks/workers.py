"""Checks of the workers: how many, how much memory, concurrency and restarts."""

from __future__ import annotations

import ast
import math
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from doctor import Context, FactUnavailable, Location, check, error, info, ok, warning
from doctor.facts.memory import (
    MEMORY_SHARE_LIMIT,
    CpuBudget,
    MemoryProjection,
    format_bytes,
    memory_capacity,
)

# gunicorn's docs suggest (2 x cores) + 1 workers to start with and give
# 2-4 x cores as the usual range (gunicorn/config.py, Workers.desc, and
# docs/content/design.md, "How Many Workers?", in gunicorn 27.0.1).
WORKERS_PER_CORE_MAX = 4
# The one expression for workers that the static reader evaluates.
CPU_COUNT_PATTERN = "multiprocessing.cpu_count() * 2 + 1"
# The minimum the pattern gives, on a machine with one CPU.
CPU_COUNT_PATTERN_MIN = 3

# Worker classes as gunicorn 27.0.1 names them (gunicorn/workers/__init__.py).
CLASS_NAMES = {
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent_pywsgi",
    "gunicorn.workers.geventlet.EventletWorker": "eventlet",
    "gunicorn.workers.gtornado.TornadoWorker": "tornado",
    "gunicorn.workers.gasgi.ASGIWorker": "asgi",
}
# Classes that serve up to worker_connections requests at once in each worker.
CONNECTION_CLASSES = ("gevent", "gevent_wsgi", "gevent_pywsgi", "eventlet", "asgi")

# Filesystems kept in memory, so a heartbeat update there does no disk I/O.
MEMORY_FSTYPES = frozenset({"tmpfs", "ramfs"})
CONTAINER_CGROUP_WORDS = ("docker", "containerd", "kubepods")


def _loaded_settings(ctx: Context):
    """Return the settings, or skip when gunicorn would not finish loading them."""
    settings = ctx.fact("settings")
    if settings.error:
        raise FactUnavailable("gunicorn did not finish loading the configuration")
    return settings


def _where(settings) -> str:
    if settings.estimated:
        return f"static estimate: {settings.estimate_reason}"
    return f"resolved by gunicorn {settings.gunicorn_version}"


def _exec_location(ctx: Context) -> Location | None:
    service = ctx.target.service
    entry = getattr(service, "exec_start_entry", None)
    return Location(entry.path, entry.line) if entry else None


def _long_flag(settings, name: str) -> str:
    flags = settings.cli_flags.get(name) or []
    long_flags = [f for f in flags if f.startswith("--")]
    return (long_flags or flags or [f"--{name.replace('_', '-')}"])[0]


def _fix_line(settings, name: str, literal: str, *, beside: str | None = None) -> str:
    """Return the line that sets ``name`` where its value comes from.

    ``beside`` names another setting whose place (config file, command line
    or GUNICORN_CMD_ARGS) the new line should go to instead.
    """
    kind = settings.source(beside or name).kind
    if kind == "cli":
        return f"{_long_flag(settings, name)} {literal} in ExecStart"
    if kind == "env":
        return f"{_long_flag(settings, name)} {literal} in GUNICORN_CMD_ARGS"
    return f"{name} = {literal}"


def _fix_location(ctx: Context, settings, name: str) -> Location | None:
    """Point at the line that sets ``name``, or at the file to add it to."""
    location = settings.location(name)
    if location is not None:
        return location
    if settings.source(name).kind == "cli":
        return _exec_location(ctx)
    if settings.config_file:
        return Location(settings.config_file, None)
    return None


def _class_name(path: str | None) -> str:
    path = path or "sync"
    return CLASS_NAMES.get(path, path)


def _worker_classes(settings) -> tuple[str, str]:
    """Return the worker class as configured and the one gunicorn runs."""
    configured = _class_name(str(settings.get("worker_class") or "sync"))
    runs = _class_name(settings.worker_class_runs or configured)
    return configured, runs


def _cores_text(cores: float) -> str:
    return f"{cores:g} CPU core" + ("" if cores == 1 else "s")


def suggested_workers(cores: float) -> int:
    """Return gunicorn's starting point of (2 x cores) + 1 workers."""
    return math.floor(2 * cores) + 1


# --- the number of workers ----------------------------------------------------


@dataclass(frozen=True)
class WorkerCount:
    """The configured number of workers as far as the doctor can tell.

    ``value`` is None when it depends on the machine that runs the tree: the
    known expression under --root. ``estimate`` is the reason a value is
    estimated, and ``expression`` is the config file's expression, if any.
    """

    value: int | None
    evidence: list[str] = field(default_factory=list)
    estimate: str | None = None
    expression: str | None = None

    @property
    def minimum(self) -> int:
        return self.value if self.value is not None else CPU_COUNT_PATTERN_MIN

    def phrase(self) -> str:
        if self.value is None:
            return f"workers = {self.expression}"
        if self.estimate:
            return f"workers = {self.value} (estimated)"
        return f"workers = {self.value}"


def is_cpu_count_pattern(expression: str) -> bool:
    """Tell whether ``expression`` is exactly ``multiprocessing.cpu_count() * 2 + 1``.

    Spacing and redundant brackets do not matter, but any other form does.
    """
    try:
        parsed = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        return False
    pattern = ast.parse(CPU_COUNT_PATTERN, mode="eval")
    return ast.dump(parsed) == ast.dump(pattern)


def _environment(ctx: Context) -> dict[str, str]:
    from doctor.facts.execution import probe_environment

    return probe_environment(ctx)


def resolve_worker_count(ctx: Context, settings, cpu: CpuBudget | None) -> WorkerCount:
    """Return the number of workers, evaluating the one known expression.

    Raise FactUnavailable when the static reader met another expression.
    """
    evidence = [settings.describe("workers")]
    value = settings.get("workers")
    expression = settings.non_literal.get("workers") if settings.estimated else None
    if expression is not None:
        if not is_cpu_count_pattern(expression):
            raise FactUnavailable(
                f"workers = {expression} is an expression, which the static"
                f" reader does not evaluate ({settings.estimate_reason})"
            )
        if cpu is None or cpu.online is None:
            return WorkerCount(None, evidence, expression=expression)
        value = suggested_workers(cpu.online)
        estimate = (
            f"{expression} evaluated with this host's os.cpu_count() ="
            f" {cpu.online}: {value}"
        )
        return WorkerCount(value, [*evidence, estimate], estimate, expression)
    if settings.estimated and settings.source("workers").kind == "default":
        # gunicorn's default for workers is $WEB_CONCURRENCY, else 1.
        concurrency = _environment(ctx).get("WEB_CONCURRENCY", "")
        if concurrency.strip().isdigit() and int(concurrency) > 0:
            row = (
                f"workers unset, so gunicorn's default $WEB_CONCURRENCY ="
                f" {concurrency} (the service's environment)"
            )
            return WorkerCount(int(concurrency), [row])
    if not isinstance(value, int) or isinstance(value, bool):
        raise FactUnavailable(
            f"workers is not a number: {settings.describe('workers')}"
        )
    return WorkerCount(value, evidence)


@check(
    "workers-count",
    area="workers",
    title="The number of workers fits the CPUs",
    needs=("settings", "cpu_budget"),
)
def workers_count(ctx: Context):
    """Warn when there are far more workers than the CPUs can run.

    gunicorn suggests (2 x cores) + 1 workers to start with and 2-4 workers
    per core. More processes add memory and context switches, not
    throughput. The cores are os.cpu_count(), lowered by the CPU affinity
    mask and by a cgroup CPU quota (cpu.max, or cpu.cfs_quota_us on cgroup
    v1) of the running master, or by the unit's CPUQuota=.
    ``multiprocessing.cpu_count()`` in a config file counts every CPU of the
    host and ignores such a quota. In static mode that exact expression is
    evaluated with this host's CPU count and reported as an estimate, and
    other expressions are skipped. Under --root the machine's CPUs are
    unknown.
    """
    settings = _loaded_settings(ctx)
    cpu = ctx.fact("cpu_budget")
    count = resolve_worker_count(ctx, settings, cpu)
    cores = cpu.cores
    evidence = [*count.evidence, *cpu.evidence]
    location = _fix_location(ctx, settings, "workers")
    if count.value is None:
        yield info(
            f"{count.phrase()} gives 2 × CPUs + 1 workers on the machine that runs it",
            "That is gunicorn's suggested starting point, but the machine that"
            f" runs the tree under --root {ctx.fs.root} is unknown, and in a"
            " container with a CPU limit multiprocessing.cpu_count() counts all"
            " of the host's CPUs, not the limit.",
            evidence=evidence,
            location=location,
        )
        return
    workers = count.value
    if cores is None:
        needed = math.ceil(workers / WORKERS_PER_CORE_MAX)
        yield info(
            f"{count.phrase()} suits a machine with at least {_cores_text(needed)}",
            "gunicorn suggests (2 × cores) + 1 workers to start with and 2-4"
            " workers per core. The CPUs of the machine that runs the tree under"
            f" --root {ctx.fs.root} are unknown.",
            evidence=evidence,
            location=location,
        )
        return
    suggested = suggested_workers(cores)
    cores_text = _cores_text(cores)
    if workers > WORKERS_PER_CORE_MAX * cores and workers > suggested:
        yield warning(
            f"{count.phrase()} is more than {cores_text} can run: gunicorn"
            f" suggests 2 × {cores:g} + 1 = {suggested}",
            _too_many_detail(settings, count, cpu, workers),
            fix=_fix_line(settings, "workers", str(suggested)),
            evidence=evidence,
            location=location,
        )
        return
    estimate = f" Estimate: {count.estimate}." if count.estimate else ""
    yield ok(
        f"{count.phrase()} fits {cores_text} (gunicorn suggests 2 × {cores:g} + 1"
        f" = {suggested} to start, up to {WORKERS_PER_CORE_MAX} per core)",
        f"Settings: {_where(settings)}.{estimate}",
        evidence=evidence,
    )


def _too_many_detail(settings, count: WorkerCount, cpu: CpuBudget, workers: int) -> str:
    cores = cpu.cores
    detail = (
        f"{workers} worker processes share {_cores_text(cores)}: beyond about"
        f" {WORKERS_PER_CORE_MAX} per core they add memory use and context"
        " switches, not throughput, and under load each request waits longer"
        " for a CPU."
    )
    from_expression = count.expression is not None or "workers" in settings.non_literal
    if from_expression and cpu.limited:
        detail += (
            f" The config computes workers from the CPU count, and"
            f" multiprocessing.cpu_count() counts all {cpu.online} CPUs of the"
            " host, not the CPU limit the workers run under."
        )
    if count.estimate:
        detail += f" Estimate: {count.estimate}."
    return detail


# --- memory -------------------------------------------------------------------

METRIC_NOTES = {
    "PSS": "PSS splits each shared page among the processes that map it, so"
    " the figures add up.",
    "USS": "USS leaves out the pages the processes share, so the projection is"
    " on the low side.",
    "RSS": "RSS counts shared pages again in every process, so the projection"
    " is on the high side.",
}


@check(
    "workers-memory",
    area="workers",
    title="The workers fit in memory",
    needs=("worker_memory", "memory_budget", "settings"),
    live=True,
)
def workers_memory(ctx: Context):
    """Warn when the configured workers would use over 80 % of the memory.

    Measures the running master and each worker with psutil: PSS where
    /proc/PID/smaps_rollup is readable (the shared pages are split among the
    processes, so the figures add up), else RSS, which counts shared pages
    in every process and overstates the total. The projection is the
    configured number of workers times the largest worker, plus the master.
    It is compared with the memory gunicorn may use: the host's available
    memory plus what the master and workers use now, or the cgroup's memory
    limit (memory.max, or memory.limit_in_bytes on cgroup v1) when lower.
    Without a running master nothing is measured and the check is skipped.
    """
    try:
        measured = ctx.fact("worker_memory")
    except FactUnavailable as exc:
        raise FactUnavailable(
            f"the workers' memory was not measured: {exc.reason}"
        ) from None
    budget = ctx.fact("memory_budget")
    settings = None
    try:
        settings = _loaded_settings(ctx)
    except FactUnavailable:
        pass
    configured = settings.get("workers") if settings is not None else None
    running = len(measured.workers)
    if isinstance(configured, int) and not isinstance(configured, bool) and configured:
        count, count_source = configured, settings.describe("workers")
    else:
        count, count_source = running, f"{running} workers running (config unknown)"
    metric = measured.metric
    largest = measured.largest_worker
    cgroup_limit = budget.cgroup_limit
    capacity, bound = memory_capacity(
        budget.available,
        measured.in_use,
        int(cgroup_limit.value) if cgroup_limit is not None else None,
    )
    projection = MemoryProjection(
        count, largest.size(metric), measured.master.size(metric), capacity
    )
    evidence = _memory_evidence(measured, budget, projection, bound, count_source)
    total = format_bytes(projection.total)
    share = _percent(projection.share)
    if bound == "cgroup":
        room = f"the cgroup's limit of {format_bytes(capacity)}"
    else:
        room = f"the {format_bytes(capacity)} gunicorn may use on this host"
    if projection.exceeds():
        yield warning(
            f"{count} workers and the master need about {total} ({metric}),"
            f" {share} of {room}",
            f"Projected from the largest running worker (pid {largest.pid}) times"
            f" the configured workers, plus the master. {METRIC_NOTES[metric]}"
            f" Above {MEMORY_SHARE_LIMIT:.0%} a request that needs more memory than"
            " usual, or a worker that starts while the old one still runs, can"
            " run the host or cgroup out of memory, and the kernel's OOM killer"
            " then kills a worker (gunicorn logs 'was sent SIGKILL! Perhaps out"
            " of memory?').",
            fix=_memory_fix(settings, projection, bound),
            evidence=evidence,
            location=settings.location("workers") if settings else None,
        )
        return
    yield ok(
        f"{count} workers and the master need about {total} ({metric}), {share}"
        f" of {room}",
        f"Projected from the largest running worker (pid {largest.pid}) times"
        f" the configured workers, plus the master. {METRIC_NOTES[metric]}",
        evidence=evidence,
    )


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"


def _memory_evidence(measured, budget, projection, bound, count_source) -> list[str]:
    metric = measured.metric
    largest = measured.largest_worker
    per_worker = format_bytes(projection.per_worker)
    headline = (
        f"per-worker memory: {per_worker} {metric} (the largest of"
        f" {len(measured.workers)} running workers, pid {largest.pid})"
    )
    arithmetic = (
        f"projection: {projection.workers} × {per_worker} + master"
        f" {format_bytes(projection.master)} = {format_bytes(projection.total)}"
    )
    available = (
        f"available memory: {format_bytes(budget.available)}"
        " (psutil.virtual_memory().available) +"
        f" {format_bytes(measured.in_use)} the master and workers use now"
    )
    rows = [
        headline,
        measured.master.row(),
        *(worker.row() for worker in measured.workers),
        f"workers: {count_source}",
        arithmetic,
        available,
    ]
    if budget.cgroup_limit is not None:
        rows.append(f"cgroup memory limit: {budget.cgroup_limit.row()}")
    rows.append(f"capacity: {format_bytes(projection.capacity)} (from the {bound})")
    rows.extend(measured.problems)
    return rows


def _memory_fix(settings, projection: MemoryProjection, bound: str) -> str:
    fitting = projection.workers_within()
    raise_limit = (
        "raise MemoryMax= in the unit (or the container's memory limit)"
        if bound == "cgroup"
        else "add memory to the host"
    )
    if 1 <= fitting < projection.workers:
        line = (
            _fix_line(settings, "workers", str(fitting))
            if settings
            else f"workers = {fitting}"
        )
        return f"{line}, or {raise_limit}"
    return f"{raise_limit[0].upper()}{raise_limit[1:]}, because even one worker does not fit"


# --- concurrency --------------------------------------------------------------


class Concurrency(NamedTuple):
    """Requests one worker serves at once, and their text (``4 threads``)."""

    per_worker: int | None
    unit: str
    each: str


def _per_worker(settings, runs: str) -> Concurrency:
    threads = settings.get("threads")
    connections = settings.get("worker_connections")
    if runs == "sync":
        return Concurrency(1, "requests", "1 request")
    if runs == "gthread":
        if not isinstance(threads, int) or not isinstance(connections, int):
            return Concurrency(None, "requests", "threads and worker_connections")
        if connections < threads:
            # A gthread worker accepts no more than worker_connections at once.
            return Concurrency(
                connections, "requests", f"{connections} worker_connections"
            )
        return Concurrency(threads, "requests", f"{threads} threads")
    if runs in CONNECTION_CLASSES:
        if not isinstance(connections, int):
            return Concurrency(None, "connections", "worker_connections")
        return Concurrency(
            connections, "connections", f"{connections} worker_connections"
        )
    return Concurrency(None, "requests", f"the {runs} worker class")


@check(
    "workers-concurrency",
    area="workers",
    title="The workers serve more than one request at a time",
    needs=("settings",),
)
def workers_concurrency(ctx: Context):
    """Report how many requests the workers serve at once, and flag one.

    Concurrency is workers x 1 for sync, workers x threads for gthread
    (which gunicorn runs when worker_class is sync and threads > 1), and
    workers x worker_connections for gevent, eventlet and asgi workers. With
    a concurrency of 1 a single slow request holds up every other one.
    config-worker-settings reports the settings a worker class ignores, and
    this check gives the resulting arithmetic.
    """
    settings = _loaded_settings(ctx)
    try:
        cpu = ctx.fact("cpu_budget")
    except FactUnavailable:
        cpu = None
    count = resolve_worker_count(ctx, settings, cpu)
    if settings.estimated:
        for name in ("worker_class", "threads", "worker_connections"):
            if name in settings.non_literal:
                raise FactUnavailable(
                    f"{name} = {settings.non_literal[name]} is an expression, which"
                    f" the static reader does not evaluate ({settings.estimate_reason})"
                )
    configured, runs = _worker_classes(settings)
    concurrency = _per_worker(settings, runs)
    evidence = [
        *count.evidence,
        settings.describe("worker_class"),
        f"worker class that runs: {runs}",
    ]
    if runs == "gthread" or configured != runs:
        evidence.append(settings.describe("threads"))
    if runs in CONNECTION_CLASSES or runs == "gthread":
        evidence.append(settings.describe("worker_connections"))
    if concurrency.per_worker is None:
        yield info(
            f"{count.phrase()} {runs} workers: the doctor cannot tell how many"
            " requests each serves at once",
            f"Concurrency depends on {concurrency.each}.",
            evidence=evidence,
        )
        return
    workers_text = "(2 × CPUs + 1)" if count.value is None else str(count.value)
    total = count.minimum * concurrency.per_worker
    at_least = "at least " if count.value is None else ""
    summary = (
        f"{workers_text} {runs} workers × {concurrency.each} ="
        f" {at_least}{total} {concurrency.unit} at a time"
    )
    if total == 1:
        yield _single_request_finding(ctx, settings, runs, evidence, cpu)
        return
    if configured != runs:
        yield info(
            f"gunicorn runs {runs} workers, not {configured}: {summary}",
            f"threads = {settings.get('threads')} makes gunicorn replace the"
            f" {configured} worker by {runs} (config-worker-settings reports the"
            f" setting), so each worker serves {concurrency.per_worker} requests"
            " in threads.",
            evidence=evidence,
            location=settings.location("threads"),
        )
        return
    yield ok(summary, f"Settings: {_where(settings)}.", evidence=evidence)


def _single_request_finding(ctx: Context, settings, runs: str, evidence, cpu):
    cores = cpu.cores if cpu is not None else None
    workers = suggested_workers(cores) if cores else CPU_COUNT_PATTERN_MIN
    if runs == "sync":
        title = (
            "workers = 1 with sync workers: one request at a time, so one slow"
            " request blocks the site"
        )
        name, literal = "workers", str(workers)
    elif runs == "gthread":
        title = (
            "1 gthread worker with 1 thread: one request at a time, so one slow"
            " request blocks the site"
        )
        name, literal = "threads", "4"
    else:
        title = (
            f"1 {runs} worker with worker_connections = 1: one connection at a"
            " time, so one slow client blocks the site"
        )
        name, literal = "worker_connections", "1000"
    return warning(
        title,
        "While the only request runs, every other request waits in the listen"
        " backlog until it finishes, and nginx answers 504 to those that wait"
        " longer than its proxy timeouts. A health check stuck behind a slow"
        " request fails too.",
        fix=_fix_line(settings, name, literal),
        evidence=evidence,
        location=_fix_location(ctx, settings, name),
    )


# --- restarts after max_requests ----------------------------------------------


@check(
    "workers-recycling",
    area="workers",
    title="Workers restarted by max_requests do not restart together",
    needs=("settings",),
)
def workers_recycling(ctx: Context):
    """Warn when max_requests is set without max_requests_jitter.

    Each worker restarts after exactly max_requests requests. Workers share
    the load about evenly, so without jitter they reach the count at about
    the same time and restart together, and requests wait while the new
    workers boot. gunicorn adds randint(0, max_requests_jitter) to each
    worker's limit to spread the restarts.
    """
    settings = _loaded_settings(ctx)
    max_requests = settings.get("max_requests")
    jitter = settings.get("max_requests_jitter")
    evidence = [
        settings.describe("max_requests"),
        settings.describe("max_requests_jitter"),
    ]
    for name, value in (
        ("max_requests", max_requests),
        ("max_requests_jitter", jitter),
    ):
        if not isinstance(value, int):
            raise FactUnavailable(f"{name} is not a number: {settings.describe(name)}")
    if max_requests <= 0:
        if jitter > 0:
            yield info(
                f"max_requests_jitter = {jitter} has no effect while max_requests is 0",
                "Workers are never restarted after a number of requests, so there"
                " is nothing to spread.",
                fix="Remove max_requests_jitter, or set max_requests as well.",
                evidence=evidence,
                location=settings.location("max_requests_jitter"),
            )
            return
        yield ok("max_requests is off: workers are not restarted after N requests")
        return
    if jitter <= 0:
        suggested = max(1, max_requests // 10)
        place = (
            "max_requests_jitter"
            if settings.source("max_requests_jitter").kind != "default"
            else "max_requests"
        )
        yield warning(
            f"max_requests = {max_requests} without max_requests_jitter: the"
            " workers restart at about the same time",
            f"Each worker restarts after exactly {max_requests} requests. Workers"
            " that share the load reach that count together, so they restart"
            " together and requests wait while the new workers boot.",
            fix=_fix_line(settings, "max_requests_jitter", str(suggested), beside=place)
            + f" (max_requests // 10 spreads the restarts over {max_requests}"
            f"-{max_requests + suggested} requests)",
            evidence=evidence,
            location=_fix_location(ctx, settings, place),
        )
        return
    yield ok(
        f"max_requests = {max_requests} with max_requests_jitter = {jitter}: each"
        f" worker restarts after {max_requests}-{max_requests + jitter} requests",
        evidence=evidence,
    )


# --- preload_app --------------------------------------------------------------

HUP_NAMES = frozenset({"HUP", "SIGHUP", "1"})


def sends_hup(argv: list[str]) -> bool:
    """Tell whether a command line runs ``kill`` with SIGHUP."""
    if not argv or posixpath.basename(argv[0]) != "kill":
        return False
    args = argv[1:]
    for index, arg in enumerate(args):
        value = args[index + 1] if index + 1 < len(args) else ""
        if arg in ("-s", "--signal") and value.upper() in HUP_NAMES:
            return True
        if arg.startswith("-") and arg[1:].upper() in HUP_NAMES:
            return True
        if arg.startswith("--signal=") and arg.split("=", 1)[1].upper() in HUP_NAMES:
            return True
    return False


def _hup_reload(ctx: Context):
    """Return the unit's ExecReload= entry that sends SIGHUP, if any."""
    from doctor.unitfile import parse_exec

    service = ctx.target.service
    if service is None:
        return None
    for entry in service.unit.values("Service", "ExecReload"):
        try:
            command = parse_exec(entry.value)
        except ValueError:
            continue
        if sends_hup(command.argv):
            return entry
    return None


def _restart_command(ctx: Context) -> str:
    unit = ctx.target.unit
    if unit is not None:
        return f"systemctl restart {os.path.basename(unit.value)}"
    return "a restart of gunicorn"


@check(
    "workers-preload",
    area="workers",
    title="New code reaches the workers",
    needs=("settings",),
)
def workers_preload(ctx: Context):
    """Warn when preload_app keeps new code from reaching the workers.

    With preload_app the master imports the app once and forks every worker
    from it. The reloader (reload = True) then restarts workers from the
    master's old code, and a SIGHUP (the usual ExecReload= of a gunicorn
    unit) rereads the config but keeps the app the master imported. Only a
    restart, or a USR2 binary upgrade, loads new code.
    """
    settings = _loaded_settings(ctx)
    preload = settings.get("preload_app")
    if not preload:
        yield ok(
            "preload_app is off: each worker imports the app, so a HUP or the"
            " reloader loads new code"
        )
        return
    evidence = [settings.describe("preload_app")]
    findings = []
    if settings.get("reload"):
        findings.append(
            warning(
                "reload and preload_app are both on: code changes never reach"
                " the workers",
                "The reloader restarts a worker when a file changes, but the new"
                " worker is forked from the master, which still holds the code it"
                " imported at start. gunicorn's docs call the reloader"
                " incompatible with preloading.",
                fix=_fix_line(settings, "preload_app", "False")
                + " (or remove reload, which is meant for development)",
                evidence=[*evidence, settings.describe("reload")],
                location=_fix_location(ctx, settings, "reload"),
            )
        )
    reload_entry = _hup_reload(ctx)
    restart = _restart_command(ctx)
    if reload_entry is not None:
        reload_row = (
            f"ExecReload={reload_entry.value} ({reload_entry.path}:{reload_entry.line})"
        )
        findings.append(
            warning(
                "systemctl reload sends HUP, which does not load new code with"
                " preload_app",
                "ExecReload= sends SIGHUP to the master. gunicorn then rereads its"
                " config and starts new workers, but forks them from the master,"
                " which keeps the app it imported at start: a deploy that runs"
                " systemctl reload keeps serving the old code.",
                fix=f"Deploy with {restart} (or send USR2 for a binary upgrade"
                " without downtime), or set preload_app = False",
                evidence=[*evidence, reload_row],
                location=Location(reload_entry.path, reload_entry.line),
            )
        )
    if findings:
        yield from findings
        return
    yield info(
        "preload_app is on: deploy new code with a restart, not a HUP",
        "The master imports the app once and forks the workers from it, so a"
        " SIGHUP starts new workers with the old code.",
        fix=f"Deploy with {restart}",
        evidence=evidence,
        location=settings.location("preload_app"),
    )


# --- the heartbeat directory --------------------------------------------------


def container_markers(root: Path = Path("/")) -> list[str]:
    """Return the signs that this host is a container, for evidence.

    Looks for /.dockerenv (Docker), /run/.containerenv (Podman) and a
    docker, containerd or kubepods cgroup of PID 1.
    """
    markers = []
    for name in (".dockerenv", "run/.containerenv"):
        if (root / name).exists():
            markers.append(f"/{name} exists")
    try:
        init_cgroup = (root / "proc/1/cgroup").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        init_cgroup = ""
    for line in init_cgroup.splitlines():
        if any(word in line for word in CONTAINER_CGROUP_WORDS):
            markers.append(f"/proc/1/cgroup: {line.strip()}")
            break
    return markers


def _heartbeat_dir(ctx: Context, settings) -> tuple[str, str]:
    """Return the directory of the heartbeat files and where it comes from.

    Without worker_tmp_dir, gunicorn calls tempfile.mkstemp(), which uses
    $TMPDIR, $TEMP or $TMP, else /tmp.
    """
    configured = settings.get("worker_tmp_dir")
    if configured:
        # gunicorn resolves a relative directory from its working directory.
        directory = str(configured)
        if not os.path.isabs(directory) and ctx.target.chdir is not None:
            directory = os.path.join(ctx.target.chdir.value, directory)
        return directory, settings.describe("worker_tmp_dir")
    environment = _environment(ctx)
    for name in ("TMPDIR", "TEMP", "TMP"):
        if environment.get(name):
            return environment[name], f"worker_tmp_dir unset, so ${name}"
    return "/tmp", "worker_tmp_dir unset, so Python's default /tmp"


def _mount_of(directory: str, mounts):
    from doctor.facts.pidfile import is_below

    best = None
    for mount in mounts:
        # Later lines are mounted on top of earlier ones at the same point.
        longer = best is None or len(mount.point) >= len(best.point)
        if longer and is_below(directory, mount.point):
            best = mount
    return best


@check(
    "workers-tmp-dir",
    area="workers",
    title="Worker heartbeats do not wait for a disk",
    needs=("settings",),
    live=True,
)
def workers_tmp_dir(ctx: Context):
    """Warn when the heartbeat files sit on a disk-backed filesystem in a container.

    Each worker updates the timestamp of a file in worker_tmp_dir on every
    pass of its loop (os.utime since gunicorn 22.0, os.fchmod before). On
    a disk-backed filesystem such as a container's overlay that call can
    block, so the master finds the worker silent and kills it with WORKER
    TIMEOUT. A tmpfs such as /dev/shm keeps the file in memory. A container
    is recognised by /.dockerenv, /run/.containerenv or the cgroup of PID 1,
    and the filesystem from the running master's mount table (or the
    doctor's). Static mode and --root skip the check: the host that runs
    the doctor is then not known to be the one that runs gunicorn.
    """
    settings = _loaded_settings(ctx)
    if not ctx.fs.is_live:
        raise FactUnavailable(
            "whether the tree under --root runs in a container, and the"
            " filesystems it mounts, are unknown"
        )
    directory, origin = _heartbeat_dir(ctx, settings)
    location = _fix_location(ctx, settings, "worker_tmp_dir")
    fix = _fix_line(settings, "worker_tmp_dir", '"/dev/shm"')
    if not os.path.isdir(directory):
        if settings.get("worker_tmp_dir"):
            yield error(
                f"worker_tmp_dir {directory} does not exist",
                "Each worker fails at boot with \"RuntimeError: ... doesn't exist."
                " Can't create workertmp.\" and gunicorn exits.",
                fix=fix,
                evidence=[origin],
                location=location,
            )
            return
        raise FactUnavailable(f"the temporary directory {directory} does not exist")
    resolved = os.path.realpath(directory)
    mounts, table = _mount_table(ctx)
    mount = _mount_of(resolved, mounts)
    if mount is None:
        raise FactUnavailable(f"{table} lists no filesystem for {resolved}")
    # NOTE: the markers are those of the doctor's own root, so a doctor run on
    # the host misses a master that runs inside a container.
    markers = container_markers()
    evidence = [origin, f"{table}: {mount.row()}", *markers]
    where = f"{directory} ({mount.fstype} at {mount.point})"
    if mount.fstype in MEMORY_FSTYPES:
        yield ok(
            f"worker heartbeat files go to {where}, kept in memory", evidence=evidence
        )
        return
    if not markers:
        yield ok(
            f"worker heartbeat files go to {where}, and this host is not a container",
            "gunicorn's heartbeat calls can block on a slow disk. The known case"
            " is a container's overlay filesystem.",
            evidence=evidence,
        )
        return
    yield warning(
        f"worker heartbeat files go to {where} inside a container",
        "Each worker updates its heartbeat file on every pass of its loop. On"
        f" {mount.fstype}, a disk-backed filesystem, the update can block, the"
        " master then takes the worker for hung and kills it with a WORKER"
        " TIMEOUT although it was serving.",
        fix=fix,
        evidence=evidence,
        location=location,
    )


def _mount_table(ctx: Context):
    """Read the mount table of the running master, else the doctor's."""
    from doctor.facts.pidfile import read_mounts

    try:
        pid = ctx.fact("master").pid
    except FactUnavailable:
        pid = None
    if pid is not None:
        path = f"/proc/{pid}/mounts"
        try:
            return read_mounts(path), path
        except FactUnavailable:
            pass
    return read_mounts(), "/proc/self/mounts"
