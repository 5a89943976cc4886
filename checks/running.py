"""Compare the running master with what the files on disk would start."""

from __future__ import annotations

import os
import shlex
import time

from doctor import Context, FactUnavailable, Location, check, info, ok, warning

# psutil derives start times from the boot time, which /proc/stat gives in
# whole seconds, so they can be off by up to a second against file times.
START_TIME_SLACK = 2.0


def _bind_text(bind: str) -> str:
    """Normalize a gunicorn bind the way listeners are described."""
    if bind.startswith("unix:"):
        return bind
    if bind.startswith("fd://"):
        return bind
    if bind.startswith("["):
        return bind if "]:" in bind else f"{bind}:8000"
    host, sep, port = bind.rpartition(":")
    if not sep:
        return f"{bind}:8000"
    return f"{host}:{port}"


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _reload_command(ctx: Context, pid: int) -> str:
    unit = ctx.target.unit
    if unit is not None:
        name = os.path.basename(unit.value)
        return f"systemctl reload {name}  (or: kill -HUP {pid})"
    return f"kill -HUP {pid}"


@check(
    "config-reloaded",
    area="config",
    title="The running master uses the configuration on disk",
    needs=("master", "settings"),
    live=True,
)
def config_reloaded(ctx: Context):
    """Warn when the running master no longer matches the files on disk.

    gunicorn reads its config file at start and on SIGHUP only, so an edit
    takes effect only after a reload, and an edit to the unit's ``ExecStart``
    only after ``systemctl daemon-reload`` and a restart. This check compares
    what can be seen from outside the master: the addresses it listens on
    against ``bind``, its number of workers against ``workers``, its command
    line against the unit's ``ExecStart``, and the config file's modification
    time against the start of the oldest worker (a reload replaces every
    worker). Settings such as ``timeout`` cannot be read from a running
    master; the modification time stands in for them.
    """
    master = ctx.fact("master")
    settings = ctx.fact("settings")
    if settings.estimated:
        raise FactUnavailable(
            f"the settings on disk are only a static estimate ({settings.estimate_reason})"
        )
    findings = []
    findings += _compare_binds(ctx, master, settings)
    findings += _compare_workers(ctx, master, settings)
    findings += _compare_argv(ctx, master)
    findings += _compare_mtime(ctx, master, settings)
    if findings:
        yield from findings
        return
    yield ok(
        f"master pid {master.pid} listens on the configured binds and runs"
        f" {len(master.workers)} workers, as the files on disk say",
        evidence=[master.process.row()],
    )


def _compare_binds(ctx: Context, master, settings):
    configured = sorted({_bind_text(b) for b in settings.get("bind") or []})
    # -b on the master's command line wins over the config file and survives
    # a SIGHUP, so a config with other binds was not what the master read.
    started_with = master.argv_binds
    if started_with and ctx.target.master_argv is None:
        configured = sorted({_bind_text(b) for b in started_with})
    listening = sorted(master.serving_addresses(settings))
    if not listening or any(b.startswith("fd://") for b in configured):
        return []
    if set(configured) == set(listening):
        return []
    return [
        warning(
            "the running master listens on "
            f"{', '.join(listening)}, but the config says {', '.join(configured)}",
            "bind was changed after the master started; gunicorn rebinds on SIGHUP.",
            fix=_reload_command(ctx, master.pid),
            evidence=[master.process.row(), settings.describe("bind")],
            location=settings.location("bind"),
        )
    ]


def _compare_workers(ctx: Context, master, settings):
    wanted = settings.get("workers")
    running = len(master.workers)
    if not isinstance(wanted, int) or running == wanted:
        return []
    return [
        warning(
            f"the master runs {running} workers, but the config says {wanted}",
            "workers was changed after the master started, or someone sent"
            " TTIN/TTOU; a SIGHUP applies the configured number. A count that"
            " keeps changing means workers are dying and being replaced.",
            fix=_reload_command(ctx, master.pid),
            evidence=[master.process.row()]
            + [f"worker {w.row()}" for w in master.workers],
            location=settings.location("workers"),
        )
    ]


def _compare_argv(ctx: Context, master):
    target = ctx.target
    if target.service is None or target.master_argv is None:
        return []
    if not target.argv_source.startswith("ExecStart"):
        return []
    if list(target.master_argv) == list(target.argv) or not target.master_argv:
        return []
    entry = target.service.exec_start_entry
    name = os.path.basename(target.unit.value)
    return [
        warning(
            "the master was started with other arguments than the unit's ExecStart",
            "The unit file changed after the service started; a reload does not"
            " apply ExecStart, a restart does.",
            fix=f"systemctl daemon-reload && systemctl restart {name}",
            evidence=[
                f"running: {shlex.join(target.master_argv)}",
                f"unit:    {shlex.join(target.argv)}",
            ],
            location=Location(entry.path, entry.line) if entry else None,
        )
    ]


def _compare_mtime(ctx: Context, master, settings):
    if not settings.config_file or not master.workers:
        return []
    try:
        modified = os.stat(ctx.fs.host(settings.config_file)).st_mtime
    except OSError:
        return []
    oldest = min(w.create_time for w in master.workers)
    if modified <= oldest + START_TIME_SLACK:
        return []
    return [
        info(
            f"{settings.config_file} changed after the oldest worker started",
            "A reload replaces every worker, so at least one worker runs with"
            " the configuration from before the edit.",
            fix=_reload_command(ctx, master.pid),
            evidence=[
                f"{settings.config_file} modified {_stamp(modified)}",
                f"oldest worker started {_stamp(oldest)}",
                master.process.row(),
            ],
            location=Location(settings.config_file, None),
        )
    ]
