"""Why 502: weigh every candidate cause against the evidence and pick one.

Evidence comes from four places: nginx's configuration compared with
gunicorn's binds, one request to each bind (and through nginx), the
running processes, and the classified lines of nginx's, gunicorn's and the
kernel's logs within the window. Each candidate cause collects points from
the evidence that supports it. The one with the most is the verdict, and
the others with points follow it. Those with none are listed as ruled out,
with what was examined. A candidate that another one explains (a missing socket
because gunicorn is down, gunicorn down because its app fails to boot) is
folded into it, so that the verdict names the cause to fix first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from doctor.context import Context, FactUnavailable, fact

# Points per kind of evidence. A direct observation (the probe, the process
# table, the configuration) outweighs any number of log lines, which may
# belong to an earlier incident inside the window.
CONFIG_POINTS = 60
PROBE_POINTS = 50
PROCESS_POINTS = 30
LOG_POINTS_PER_LINE = 1
LOG_POINTS_CAP = 40
# Maximum number of distinct notes or exception lines quoted per candidate.
MAX_NOTES = 3
# One wording for a log signature that several candidates quote, so that a
# folded candidate adds no second heading for the same lines.
UNIX_MISSING_TEXT = "connect() to unix:... failed (2: No such file or directory)"


NOTHING_EXAMINED = "no log or probe that would show it could be read"
# Exit codes of a worker that failed to boot (3) or to load the app (4),
# gunicorn's Arbiter.WORKER_BOOT_ERROR and APP_LOAD_ERROR.
BOOT_EXIT_CODES = frozenset({"3", "4"})
# Signals that stop a worker on purpose: TERM for a graceful stop, reload or
# scale-down and QUIT for a quick stop (both sent by the master), and INT,
# which Ctrl-C in a terminal sends to the whole process group.
STOP_SIGNALS = frozenset({"SIGTERM", "SIGQUIT", "SIGINT"})

# For each candidate: the log signatures and probe verdicts that would show
# it, used to say what was examined when it is ruled out.
RELEVANT = {
    "app-boot-failure": (
        ("gunicorn.worker_boot_failed", "gunicorn.app_load_failed"),
        ("refused",),
    ),
    "socket-missing": (("nginx.unix_missing",), ("socket_missing",)),
    "socket-permission": (("nginx.unix_permission",), ("permission_denied",)),
    "selinux": (("nginx.tcp_permission",), ()),
    "worker-timeout": (("gunicorn.worker_timeout", "nginx.premature_close"), ()),
    "oom-kill": (("gunicorn.oom_kill",), ()),
    "worker-sigkill": (("gunicorn.sigkill",), ()),
    "worker-crash": (
        ("gunicorn.worker_exit", "gunicorn.worker_signal", "nginx.reset"),
        ("closed", "reset"),
    ),
    "too-big-header": (("nginx.too_big_header",), ("headers_too_big",)),
    "invalid-header": (("nginx.invalid_header",), ("not_http",)),
    "workers-busy": (
        ("nginx.connect_timeout", "nginx.no_live_upstreams"),
        ("no_response", "connect_timeout"),
    ),
    "app-errors": (("gunicorn.error_handling_request",), ("http_5xx",)),
    "read-timeout": (("nginx.read_timeout",), ("slow",)),
}
SIGNATURE_TEXT = {
    "gunicorn.worker_boot_failed": "'Worker failed to boot'",
    "gunicorn.app_load_failed": "'App failed to load'",
    "gunicorn.worker_timeout": "WORKER TIMEOUT",
    "gunicorn.timeout_abort": "500 after WORKER TIMEOUT",
    "gunicorn.oom_kill": "SIGKILL matched by a kernel OOM kill",
    "gunicorn.sigkill": "'was sent SIGKILL'",
    "gunicorn.worker_exit": "'Worker ... exited with code' of a crash",
    "gunicorn.worker_signal": "'Worker ... was sent SIG...!' of a crash",
    "nginx.reset": "'Connection reset by peer'",
    "gunicorn.error_handling_request": "'Error handling request'",
    "nginx.unix_missing": "'(2: No such file or directory)'",
    "nginx.unix_permission": "'(13: Permission denied)' on a unix socket",
    "nginx.tcp_permission": "'(13: Permission denied)' on TCP",
    "nginx.premature_close": "'upstream prematurely closed connection'",
    "nginx.too_big_header": "'upstream sent too big header'",
    "nginx.invalid_header": "'upstream sent invalid header'",
    "nginx.connect_timeout": "'upstream timed out ... while connecting'",
    "nginx.no_live_upstreams": "'no live upstreams'",
    "nginx.read_timeout": "'upstream timed out ... while reading response header'",
}


@dataclass
class Candidate:
    """One possible cause of the 502s, with the evidence gathered for it."""

    id: str
    title: str
    fix: str | None = None
    status: int = 502
    points: int = 0
    verdict: str = ""
    evidence: list[str] = field(default_factory=list)
    ruled_out_because: str = ""

    def add(self, points: int, line: str) -> None:
        self.points += points
        self.evidence.append(line)


@dataclass
class Triage:
    winner: Candidate | None
    others: list[Candidate]
    ruled_out: list[Candidate]
    notes: list[str]
    probes: list
    log_summaries: dict[str, dict]
    unavailable: list[str]
    examined: list[str] = field(default_factory=list)

    @property
    def observed(self) -> bool:
        """Tell whether a probe ran or a log was read, beyond the configuration."""
        return bool(self.probes) or any("'s log " in item for item in self.examined)


def _optional(ctx: Context, name: str, unavailable: list[str]):
    try:
        return ctx.fact(name)
    except FactUnavailable as exc:
        unavailable.append(f"{name}: {exc.reason}")
        return None


def _log_points(count: int) -> int:
    return min(count * LOG_POINTS_PER_LINE, LOG_POINTS_CAP)


def _was_read(evidence) -> bool:
    """Tell whether any of a log's files yielded lines or was read without error."""
    if evidence is None:
        return False
    return any(tail.lines or not tail.error for tail in evidence.tails)


def _is_crash(event) -> bool:
    """Tell whether a master's line reports a worker death that is no stop or boot."""
    if event.signature == "gunicorn.worker_exit":
        return event.extra.get("exit_code") not in BOOT_EXIT_CODES
    if event.signature == "gunicorn.worker_signal":
        return event.extra.get("signal") not in STOP_SIGNALS
    return False


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _count_line(summary, what: str) -> str:
    first = summary.first.strftime("%Y-%m-%d %H:%M:%S") if summary.first else "?"
    last = summary.last.strftime("%Y-%m-%d %H:%M:%S") if summary.last else "?"
    return f"{what}: {_plural(summary.count, 'line')}, first {first}, last {last}"


@fact("triage")
def triage(ctx: Context) -> Triage:
    """Gather the evidence and rank the candidate causes of 502 responses."""
    from doctor.logscan import summarize

    unavailable: list[str] = []
    settings = ctx.fact("settings")
    nginx = _optional(ctx, "nginx", unavailable)
    # The logs are read before the probes, so that the lines the probes'
    # own requests cause are not counted as evidence.
    nginx_log = _optional(ctx, "nginx_log", unavailable)
    gunicorn_events = _mark_timeout_aborts(_gunicorn_events(ctx, unavailable))
    kernel_log = None
    if ctx.peek("gunicorn_log") is not None:
        # Read for the SIGKILLs in gunicorn's log; it is cached by now.
        kernel_log = _optional(ctx, "kernel_log", unavailable)
    probes = _optional(ctx, "upstream_probes", unavailable) or []
    masters = _optional(ctx, "masters", unavailable)
    nginx_events = _relevant_nginx_events(ctx, nginx, settings, nginx_log)
    nginx_summary = summarize(nginx_events)
    gunicorn_summary = summarize(gunicorn_events)

    candidates = _candidates(ctx, settings, nginx)
    evidence = _Evidence(
        ctx,
        settings,
        nginx,
        probes,
        masters,
        nginx_summary,
        gunicorn_summary,
        gunicorn_events,
    )
    for candidate in candidates.values():
        collect = getattr(evidence, "for_" + candidate.id.replace("-", "_"))
        collect(candidate)
    _fold_explained(candidates, evidence)

    ranked = sorted(
        (c for c in candidates.values() if c.points > 0),
        key=lambda c: (c.status != 502, -c.points),
    )
    winner = ranked[0] if ranked and ranked[0].status == 502 else None
    if winner is not None:
        winner.evidence.extend(evidence.live_502s())
    others = [c for c in ranked if c is not winner]
    ruled_out = []
    for candidate in (c for c in candidates.values() if c.points == 0):
        if not candidate.ruled_out_because:
            candidate.ruled_out_because = evidence.default_reason(candidate)
        if candidate.ruled_out_because == NOTHING_EXAMINED:
            # Not ruled out: nothing that would show it could be read.
            unavailable.append(f"{candidate.title}: {NOTHING_EXAMINED}")
        else:
            ruled_out.append(candidate)
    examined = [f"probe of {run.bind}" for run in probes]
    if masters is not None:
        examined.append("the process table")
    if nginx is not None:
        examined.append(f"nginx's configuration ({nginx.main_file})")
    for name, evidence_log in (
        ("nginx", nginx_log),
        ("gunicorn", ctx.peek("gunicorn_log")),
        ("the kernel", kernel_log),
    ):
        if evidence_log is None:
            continue
        for tail in evidence_log.tails:
            # A binary or partly unreadable log still yields its text lines.
            if tail.error and not tail.lines:
                unavailable.append(f"{name}'s log: {tail.error}")
                continue
            examined.append(f"{name}'s log {tail.path} ({len(tail.lines)} lines)")
            if tail.error:
                unavailable.append(f"{name}'s log, in part: {tail.error}")
    return Triage(
        examined=examined,
        winner=winner,
        others=others,
        ruled_out=ruled_out,
        notes=evidence.notes,
        probes=probes,
        log_summaries={
            "nginx": nginx_summary,
            "gunicorn": gunicorn_summary,
        },
        unavailable=unavailable,
    )


def _gunicorn_events(ctx: Context, unavailable: list[str]) -> list:
    from doctor.facts.logevents import worker_kills

    try:
        return worker_kills(ctx)
    except FactUnavailable as exc:
        unavailable.append(f"gunicorn_log: {exc.reason}")
        return []


def _mark_timeout_aborts(events: list) -> list:
    """Relabel the 500s caused by gunicorn's own timeout as ``gunicorn.timeout_abort``.

    After WORKER TIMEOUT the master sends SIGABRT, whose handler raises
    SystemExit in the worker. gunicorn 27.0.1's sync worker catches it in
    ``handle`` and responds with 500, logged by the timed-out worker as 'Error
    handling request' with a traceback ending in SystemExit. That is the
    timeout at work, not an error of the app.
    """
    timed_out: set[int] = set()
    marked = []
    for event in events:
        if event.signature == "gunicorn.worker_timeout" and event.worker_pid:
            timed_out.add(event.worker_pid)
        elif (
            event.signature == "gunicorn.error_handling_request"
            and event.worker_pid in timed_out
            and event.extra.get("exception", "").startswith("SystemExit")
        ):
            timed_out.discard(event.worker_pid)
            event = replace(event, signature="gunicorn.timeout_abort")
        marked.append(event)
    return marked


def _fold(into: Candidate, folded: Candidate, why: str) -> None:
    """Move ``folded``'s points and evidence into ``into``, which explains it."""
    into.points += folded.points
    added = [line for line in folded.evidence if line not in into.evidence]
    into.evidence.extend(added)
    folded.points = 0
    folded.evidence = []
    folded.ruled_out_because = why


def _fold_explained(candidates: dict[str, Candidate], evidence: _Evidence) -> None:
    """Fold the candidates that are consequences of another one into it."""
    down = candidates["gunicorn-down"]
    missing = candidates["socket-missing"]
    boot = candidates["app-boot-failure"]
    # Only with the process table is it known that no master runs: a socket
    # deleted under a running gunicorn stays a cause of its own.
    if (
        down.points
        and missing.points
        and evidence.masters is not None
        and not evidence.socket_hidden
    ):
        _fold(
            down,
            missing,
            "not a separate cause: gunicorn creates its socket when it starts,"
            " so the socket is missing because gunicorn is not running",
        )
    if (
        down.points
        and boot.points
        and (evidence.boot_failure_is_last or evidence.import_fails)
    ):
        _fold(
            boot,
            down,
            "not a separate cause: gunicorn exited because its workers failed to"
            " boot the app"
            + (", and importing the app still fails" if evidence.import_fails else ""),
        )


def _buffer_kilobytes(header_bytes: int) -> int:
    """Return the smallest power of two in KiB, at least 16, that fits the headers."""
    size = 16
    while size * 1024 < header_bytes:
        size *= 2
    return size


def _bind_addresses(settings) -> set[str]:
    from doctor.upstream import parse_bind

    found = set()
    for bind in settings.get("bind") or []:
        address = parse_bind(bind)
        if address is not None:
            found.add(address.describe())
    return found


def _relevant_nginx_events(ctx, nginx, settings, nginx_log) -> list:
    """Keep nginx's events about this deployment: its binds or nginx's targets for it."""
    if nginx_log is None:
        return []
    wanted = _bind_addresses(settings)
    if nginx is not None:
        wanted |= {t.describe() for t in nginx.proxy_targets if t.kind != "variable"}
    relevant = []
    for event in nginx_log.events:
        if (
            event.upstream is None
            or event.upstream in wanted
            or _wildcard_match(event.upstream, wanted)
        ):
            relevant.append(event)
    return relevant


def _wildcard_match(upstream: str, wanted: set[str]) -> bool:
    port = upstream.rsplit(":", 1)[-1]
    return any(
        w.startswith(("0.0.0.0:", "[::]:")) and w.endswith(":" + port) for w in wanted
    )


def _candidates(ctx: Context, settings, nginx) -> dict[str, Candidate]:
    unit = ctx.target.unit
    service = unit.value.rsplit("/", 1)[-1] if unit else None
    start = f"systemctl start {service}" if service else "start gunicorn"
    logs = f"journalctl -u {service} -n 50" if service else "gunicorn's error log"
    items = [
        Candidate(
            "upstream-mismatch", "nginx forwards to an address gunicorn does not bind"
        ),
        Candidate(
            "gunicorn-down",
            "gunicorn is not running",
            fix=f"{start}; if it exits again, read {logs}",
        ),
        Candidate("app-boot-failure", "gunicorn's workers fail to boot the app"),
        Candidate("socket-missing", "the unix socket nginx connects to does not exist"),
        Candidate("socket-permission", "nginx's user cannot reach the unix socket"),
        Candidate(
            "selinux",
            "SELinux stops nginx from connecting to a TCP port",
            fix="setsebool -P httpd_can_network_connect 1",
        ),
        Candidate("worker-timeout", "gunicorn kills workers that exceed its timeout"),
        Candidate(
            "oom-kill",
            "the kernel's OOM killer kills gunicorn workers",
            fix="Lower workers or max memory per worker (max_requests with jitter),"
            " or give the host more memory",
        ),
        Candidate(
            "worker-sigkill",
            "workers die of SIGKILL with no WORKER TIMEOUT before",
            fix="Read the kernel log (dmesg -T | grep -i oom) as root to tell an OOM"
            " kill from an operator's kill -9",
        ),
        Candidate(
            "worker-crash",
            "a worker dies or drops the connection in the middle of a request",
            fix=f"Read the worker's last lines in {logs}: a crash in a C"
            " extension, os._exit() or sys.exit() in the app, or a signal from"
            " outside ends the worker while nginx waits for its response",
        ),
        Candidate(
            "too-big-header",
            "the app's response headers exceed nginx's proxy_buffer_size",
            fix="proxy_buffer_size 16k; proxy_buffers 8 16k;  (in the location)",
        ),
        Candidate(
            "invalid-header",
            "the upstream sends bytes nginx cannot parse as HTTP headers",
        ),
        Candidate(
            "workers-busy",
            "every gunicorn worker is busy or hung, so connections wait",
            fix="Add workers or threads, or find the slow requests in the access log",
        ),
        Candidate("app-errors", "the app itself answers with 5xx", status=500),
        Candidate(
            "read-timeout",
            "nginx gives up before gunicorn answers (504, not 502)",
            status=504,
        ),
    ]
    return {c.id: c for c in items}


class _Evidence:
    """The evidence sources, with one method per candidate to weigh them."""

    def __init__(
        self,
        ctx,
        settings,
        nginx,
        probes,
        masters,
        nginx_summary,
        gunicorn_summary,
        gunicorn_events,
    ):
        self.ctx = ctx
        self.settings = settings
        self.nginx = nginx
        self.probes = [p for p in probes if not p.through_nginx]
        self.nginx_probes = [p for p in probes if p.through_nginx]
        self.masters = masters
        self.nginx_log = nginx_summary
        self.gunicorn_log = gunicorn_summary
        self.notes: list[str] = []
        self.binds = ", ".join(settings.get("bind") or [])
        self.gunicorn_events = gunicorn_events
        self.nginx_log_read = _was_read(ctx.peek("nginx_log"))
        self.gunicorn_log_read = _was_read(ctx.peek("gunicorn_log"))
        self.kernel_log_read = ctx.peek("kernel_log") is not None
        # Set by the candidates' methods, for folding one into another.
        self.socket_hidden = False
        self.boot_failure_is_last = False
        self.import_fails = False

    # --- helpers ---------------------------------------------------------

    def _probe_verdicts(self, *verdicts: str) -> list:
        return [p for p in self.probes if p.outcome.verdict in verdicts]

    def _log(
        self, candidate, summary_key: str, what: str, source: str = "nginx"
    ) -> int:
        summaries = self.nginx_log if source == "nginx" else self.gunicorn_log
        summary = summaries.get(summary_key)
        if summary is None:
            return 0
        candidate.add(_log_points(summary.count), _count_line(summary, what))
        candidate.evidence.extend(f"  {line}" for line in summary.samples)
        return summary.count

    def _notes(self, candidate, signature: str) -> None:
        """Add the distinct notes of ``signature``'s events, which explain each kill."""
        notes = []
        for event in self.gunicorn_events:
            if event.signature == signature and event.note and event.note not in notes:
                notes.append(event.note)
        candidate.evidence.extend(f"  {note}" for note in notes[:MAX_NOTES])

    def live_502s(self) -> list[str]:
        """Describe the requests through nginx that got 502 during this run."""
        return [
            f"request through {run.bind}: {run.outcome.detail}"
            for run in self.nginx_probes
            if run.outcome.status == 502
        ]

    def _this_master(self):
        if self.masters is None:
            return None
        chdir = self.ctx.target.chdir.value if self.ctx.target.chdir else None
        if self.ctx.target.pid is not None:
            return next((m for m in self.masters if m.pid == self.ctx.target.pid), None)
        return next((m for m in self.masters if m.process.cwd == chdir), None)

    def default_reason(self, candidate) -> str:
        """Say what was looked at for ``candidate`` and found clean."""
        signatures, verdicts = RELEVANT.get(candidate.id, ((), ()))
        parts = []
        for signature in signatures:
            source, _, name = signature.partition(".")
            if (source == "nginx" and not self.nginx_log_read) or (
                source == "gunicorn" and not self.gunicorn_log_read
            ):
                continue
            parts.append(f"no {SIGNATURE_TEXT.get(signature, name)} in {source}'s log")
        if verdicts and self.probes:
            parts.append(
                "the probe of "
                + ", ".join(f"{p.bind} got {p.outcome.verdict}" for p in self.probes)
            )
        if not parts:
            return NOTHING_EXAMINED
        return "; ".join(parts)

    # --- one method per candidate ---------------------------------------

    def for_upstream_mismatch(self, candidate) -> None:
        if self.nginx is None:
            candidate.ruled_out_because = "nginx's configuration is not known"
            return
        from doctor.addresses import bind_serves, tcp_and_unix_binds

        binds = tcp_and_unix_binds(self.settings)
        targets = [t for t in self.nginx.proxy_targets if t.kind != "variable"]
        if not targets or not binds:
            candidate.ruled_out_because = "nginx proxies to no fixed address"
            return
        if any(bind_serves(b, t, self.ctx) for b in binds for t in targets):
            served = [
                t for t in targets if any(bind_serves(b, t, self.ctx) for b in binds)
            ]
            if self._running_elsewhere(candidate, served):
                return
            candidate.ruled_out_because = (
                f"nginx forwards to {', '.join(sorted({t.describe() for t in served}))},"
                f" where gunicorn listens"
            )
            return
        described = ", ".join(sorted({t.describe() for t in targets}))
        first = targets[0]
        candidate.add(
            CONFIG_POINTS,
            f"{first.location}: {first.text} while gunicorn binds {self.binds}",
        )
        refused = 0
        for key, what in (
            ("nginx.refused", "connect() failed (111: Connection refused)"),
            ("nginx.unix_missing", UNIX_MISSING_TEXT),
        ):
            refused += self._log(candidate, key, what)
        candidate.verdict = (
            f"nginx connects to {described} but gunicorn listens on {self.binds}"
            + (
                f" — {_plural(refused, 'refused connection')} in the window"
                if refused
                else ""
            )
        )
        candidate.fix = (
            f"Point {first.directive} at gunicorn in {first.location}"
            f" (proxy_pass http://{self.binds.split(',')[0].strip()};), then"
            " nginx -t && systemctl reload nginx; or change gunicorn's bind to"
            f" {first.describe()}"
        )

    def for_gunicorn_down(self, candidate) -> None:
        master = self._this_master()
        refused = self._probe_verdicts("refused", "socket_missing")
        if master is not None:
            candidate.ruled_out_because = f"master pid {master.pid} is running"
            return
        if not self._expected_to_serve():
            candidate.ruled_out_because = (
                "nothing expects this deployment to serve: no systemd unit runs it,"
                f" nginx forwards nothing to {self.binds}, and nginx logged no"
                " refused connection; start gunicorn when it should serve"
            )
            return
        if self.masters is not None:
            candidate.add(PROCESS_POINTS, "no gunicorn master of this deployment runs")
        for run in refused:
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        self._log(
            candidate, "nginx.refused", "connect() failed (111: Connection refused)"
        )
        self._log(candidate, "nginx.unix_missing", UNIX_MISSING_TEXT)
        if candidate.points and not refused and self.masters is None:
            # Only old log lines: weaker than a probe or the process table.
            candidate.points = max(1, candidate.points // 2)
            candidate.verdict = (
                f"nginx's connections to {self.binds} were refused: gunicorn was not"
                " running or not listening there (the processes of this host were"
                " not examined)"
            )
            return
        candidate.verdict = (
            f"gunicorn is not running: nothing accepts connections on {self.binds}"
        )

    def _expected_to_serve(self) -> bool:
        """Tell whether a unit, nginx or nginx's log shows that this gunicorn should run."""
        from doctor.addresses import bind_serves, tcp_and_unix_binds

        if self.ctx.target.service is not None:
            return True
        if "nginx.refused" in self.nginx_log or "nginx.unix_missing" in self.nginx_log:
            return True
        if self.nginx is None:
            return False
        binds = tcp_and_unix_binds(self.settings)
        return any(
            bind_serves(b, t, self.ctx)
            for b in binds
            for t in self.nginx.proxy_targets
            if t.kind != "variable"
        )

    def _running_elsewhere(self, candidate, served) -> bool:
        """Report a running master that does not listen where nginx connects."""
        master = self._this_master()
        if master is None:
            return False
        listening = master.serving_addresses(self.settings)
        if not listening:
            return False
        missed = [t for t in served if t.describe() not in listening]
        wildcard = {f"0.0.0.0:{t.port}" for t in missed} | {
            f"[::]:{t.port}" for t in missed
        }
        if not missed or wildcard & listening:
            return False
        first = missed[0]
        candidate.add(
            CONFIG_POINTS,
            f"master pid {master.pid} listens on {', '.join(sorted(listening))}",
        )
        candidate.evidence.append(f"  {master.process.row()}")
        candidate.evidence.append(f"{first.location}: {first.text}")
        refused = self._log(
            candidate, "nginx.refused", "connect() failed (111: Connection refused)"
        )
        candidate.verdict = (
            f"nginx connects to {first.describe()}, where gunicorn's config binds,"
            f" but the running master pid {master.pid} listens on"
            f" {', '.join(sorted(listening))}"
            + (
                f" — {_plural(refused, 'refused connection')} in the window"
                if refused
                else ""
            )
        )
        if master.argv_binds:
            candidate.fix = (
                f"Restart the master without -b {' -b '.join(master.argv_binds)}:"
                " a SIGHUP keeps the binds it was started with"
            )
        else:
            candidate.fix = (
                f"Reload gunicorn so that it binds what its config says (kill -HUP"
                f" {master.pid})"
            )
        return True

    def for_app_boot_failure(self, candidate) -> None:
        failures = 0
        for key, what in (
            ("gunicorn.worker_boot_failed", "Reason: Worker failed to boot."),
            ("gunicorn.app_load_failed", "Reason: App failed to load."),
        ):
            failures += self._log(candidate, key, what, source="gunicorn")
        for key, what in (
            ("gunicorn.exception_in_worker", "Exception in worker process"),
            ("gunicorn.app_import_error", "Failed to find ... (AppImportError)"),
        ):
            self._log(candidate, key, what, source="gunicorn")
        raised = self._boot_exceptions()
        candidate.evidence.extend(f"  raised: {text}" for text in raised)
        self.boot_failure_is_last = failures > 0 and self._boot_failure_is_last()
        if candidate.points or (self.masters is not None and not self._this_master()):
            self._import_now(candidate)
        if not candidate.points:
            return
        reason = raised[-1] if raised else self._import_message()
        if failures and not self.boot_failure_is_last and not self.import_fails:
            # gunicorn started again after the failure, so it is in the past.
            summary = (
                "gunicorn failed to boot its workers before its latest start:"
                " the app failed to load"
            )
        else:
            summary = "gunicorn cannot boot its workers: the app fails to load"
        candidate.verdict = (
            summary
            + (f" ({reason})" if reason else "")
            + (f", {_plural(failures, 'boot failure')} logged" if failures else "")
        )
        candidate.fix = (
            "Fix the error the app raises at import (shown in the evidence;"
            " gunicorn-doctor check --select import shows it with its traceback),"
            " then restart gunicorn"
        )

    def _boot_exceptions(self) -> list[str]:
        """Return the distinct last lines of the tracebacks of failed worker boots."""
        raised = []
        for event in self.gunicorn_events:
            text = event.extra.get("exception") or event.extra.get("message")
            if (
                event.signature
                in ("gunicorn.exception_in_worker", "gunicorn.app_import_error")
                and text
                and text not in raised
            ):
                raised.append(text)
        return raised[-MAX_NOTES:]

    def _boot_failure_is_last(self) -> bool:
        """Tell whether gunicorn's last start in the log ended in a boot failure."""
        last_failure = last_start = -1
        for index, event in enumerate(self.gunicorn_events):
            if event.signature in (
                "gunicorn.worker_boot_failed",
                "gunicorn.app_load_failed",
            ):
                last_failure = index
            elif event.signature == "gunicorn.starting":
                last_start = index
        return last_failure > last_start

    def _import_now(self, candidate) -> None:
        """Import the app as gunicorn would, to tell whether the failure persists."""
        try:
            imported = self.ctx.fact("app_import")
        except FactUnavailable:
            return
        if imported.timed_out:
            return
        if imported.status not in (None, "ok", "probe_failed"):
            self.import_fails = True
            candidate.add(
                PROBE_POINTS,
                f"importing {imported.spec} fails now: {self._import_message()}",
            )
        elif imported.status == "ok" and candidate.points:
            candidate.evidence.append(
                f"importing {imported.spec} succeeds now, so the cause may be fixed"
                " already: restart gunicorn and watch its log"
            )

    def _import_message(self) -> str | None:
        imported = self.ctx.peek("app_import")
        if imported is None or imported.status in (None, "ok", "probe_failed"):
            return None
        return (imported.data or {}).get("message") or imported.status

    def for_socket_missing(self, candidate) -> None:
        for run in self._probe_verdicts("socket_missing"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        self._log(
            candidate,
            "nginx.unix_missing",
            UNIX_MISSING_TEXT,
        )
        if self.nginx is not None and self.nginx.private_tmp:
            tmp = [
                t
                for t in self.nginx.proxy_targets
                if t.kind == "unix" and t.path.startswith("/tmp/")
            ]
            if tmp:
                self.socket_hidden = True
                candidate.add(
                    CONFIG_POINTS,
                    f"nginx runs with PrivateTmp=yes, so it cannot see {tmp[0].path}",
                )
        if candidate.points:
            candidate.verdict = "the unix socket nginx connects to does not exist"
            candidate.fix = (
                "Start gunicorn (it creates the socket), bind it to the path nginx"
                " uses, and keep sockets out of /tmp when nginx has PrivateTmp=yes"
            )

    def for_socket_permission(self, candidate) -> None:
        for run in self._probe_verdicts("permission_denied"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        count = self._log(
            candidate,
            "nginx.unix_permission",
            "connect() to unix:... failed (13: Permission denied)",
        )
        verdict = self._socket_path_verdict(candidate)
        if candidate.points:
            candidate.verdict = (
                "nginx's workers cannot open gunicorn's unix socket"
                + (f": {verdict}" if verdict else "")
                + (f" ({_plural(count, 'refusal')} logged)" if count else "")
            )

    def _socket_path_verdict(self, candidate) -> str | None:
        if self.nginx is None or not self.ctx.fs.is_live:
            return None
        from doctor.perms import WRITE, check_path, identity_for

        user = self.nginx.user or "www-data"
        who = identity_for(self.ctx.fs, user)
        if who is None:
            return None
        for bind in self.settings.get("bind") or []:
            if not bind.startswith("unix:"):
                continue
            verdict = check_path(self.ctx.fs, bind[len("unix:") :], who, WRITE)
            if not verdict.ok and not verdict.missing:
                candidate.add(CONFIG_POINTS, verdict.explain(who))
                candidate.evidence.extend(f"  {row}" for row in verdict.rows)
                candidate.fix = (
                    f"Let {user} reach the socket: chmod o+x {verdict.blocking}, or"
                    f" put the socket in a directory owned by the service's group"
                    f" and add {user} to that group"
                )
                return verdict.explain(who)
        return None

    def for_selinux(self, candidate) -> None:
        count = self._log(
            candidate,
            "nginx.tcp_permission",
            "connect() to TCP failed (13: Permission denied)",
        )
        if count:
            candidate.verdict = (
                "nginx is denied TCP connections to gunicorn"
                f" ({_plural(count, 'time')}): SELinux blocks httpd from connecting"
                " to the network"
            )

    def for_worker_timeout(self, candidate) -> None:
        if "gunicorn.worker_timeout" not in self.gunicorn_log:
            return
        timeouts = self._log(
            candidate, "gunicorn.worker_timeout", "WORKER TIMEOUT", "gunicorn"
        )
        self._log(
            candidate,
            "gunicorn.timeout_kill",
            "SIGKILL after WORKER TIMEOUT",
            "gunicorn",
        )
        aborted = self._log(
            candidate,
            "gunicorn.timeout_abort",
            "Error handling request after WORKER TIMEOUT (SystemExit, 500 response)",
            "gunicorn",
        )
        premature = self._log(
            candidate, "nginx.premature_close", "upstream prematurely closed connection"
        )
        reset = self._log(
            candidate, "nginx.reset", "recv() failed (104: Connection reset by peer)"
        )

        timeout = self.settings.get("timeout")
        where = self.settings.location("timeout")
        candidate.fix = (
            f"Raise gunicorn's timeout above the slowest request"
            f" ({where or 'timeout = ...'}), and keep nginx's proxy_read_timeout"
            " above it; or make the slow requests faster"
        )
        if aborted >= timeouts and not premature and not reset:
            # The worker itself sent a response to every timed-out request.
            candidate.status = 500
            candidate.verdict = (
                f"gunicorn's {timeout} s timeout aborted"
                f" {_plural(aborted, 'request')} (WORKER TIMEOUT ×{timeouts}), and"
                " the worker sent 500 Internal Server Error, which nginx passes"
                " on: these are 500s, not 502s"
            )
            return

        nginx_wait = self._nginx_read_timeout()
        candidate.verdict = (
            f"gunicorn kills requests after {timeout} s (WORKER TIMEOUT ×{timeouts})"
            + (f" while nginx waits {nginx_wait:g} s" if nginx_wait else "")
            + (
                f"; nginx saw {_plural(premature, 'premature close')}"
                if premature
                else ""
            )
            + (f"; {aborted} got a 500 from the aborted worker" if aborted else "")
        )

    def _nginx_read_timeout(self) -> float | None:
        from doctor.facts.upstream_probes import nginx_seconds

        if self.nginx is None:
            return None
        for target in self.nginx.proxy_targets:
            directive = target.settings.get("proxy_read_timeout")
            if directive:
                return nginx_seconds(directive.args[0])
        return 60.0 if self.nginx.proxy_targets else None

    def for_oom_kill(self, candidate) -> None:
        count = self._log(
            candidate,
            "gunicorn.oom_kill",
            "worker SIGKILL matched by a kernel OOM kill",
            "gunicorn",
        )
        if count:
            self._notes(candidate, "gunicorn.oom_kill")
            self._log(
                candidate,
                "nginx.premature_close",
                "upstream prematurely closed connection",
            )
            candidate.verdict = (
                f"the kernel's OOM killer killed {_plural(count, 'gunicorn worker')}"
            )

    def for_worker_sigkill(self, candidate) -> None:
        count = self._log(
            candidate,
            "gunicorn.sigkill",
            "Worker was sent SIGKILL! Perhaps out of memory?",
            "gunicorn",
        )
        if not count:
            return
        self._notes(candidate, "gunicorn.sigkill")
        self._log(
            candidate,
            "nginx.premature_close",
            "upstream prematurely closed connection",
        )
        them = "it" if count == 1 else "them"
        if self.kernel_log_read:
            candidate.verdict = (
                f"{_plural(count, 'worker')} died of SIGKILL with no WORKER TIMEOUT"
                f" before, and the kernel log records no OOM kill of {them}: an"
                " operator or a script sent kill -9, or the kernel's OOM messages"
                " are no longer in its log"
            )
            candidate.fix = (
                "Find what sends SIGKILL to the workers (kill -9 by hand, a deploy"
                " or monitoring script, a supervisor's stop timeout); if the"
                " kernel's ring buffer wrapped, search journalctl -k for 'Killed"
                " process' around the time of the kill"
            )
        else:
            candidate.verdict = (
                f"{_plural(count, 'worker')} died of SIGKILL with no WORKER TIMEOUT"
                " before: the OOM killer or an operator, and the kernel log that"
                " would tell could not be read"
            )

    def for_worker_crash(self, candidate) -> None:
        for run in self._probe_verdicts("closed", "reset"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        deaths = self._worker_deaths()
        if deaths:
            candidate.add(
                _log_points(len(deaths)),
                "Worker (pid:...) exited with code ... or was sent SIG...!:"
                f" {_plural(len(deaths), 'line')}",
            )
            candidate.evidence.extend(f"  {event.line}" for event in deaths[-2:])
        if not candidate.points:
            return
        closed = self._log(
            candidate, "nginx.premature_close", "upstream prematurely closed connection"
        )
        reset = self._log(
            candidate, "nginx.reset", "recv() failed (104: Connection reset by peer)"
        )
        candidate.verdict = (
            "gunicorn workers end in the middle of requests"
            + (f" ({_plural(len(deaths), 'worker')} died)" if deaths else "")
            + ", so nginx gets no complete response and answers 502"
            + (
                f" ({_plural(closed + reset, 'line')} in nginx's log)"
                if closed + reset
                else ""
            )
        )

    def _worker_deaths(self) -> list:
        """Return the master's lines about workers that died of a crash.

        Exit codes 3 and 4 are left out: gunicorn uses them for a worker that
        failed to boot or to load the app (app-boot-failure). So are the
        signals of a stop, and workers that gunicorn's timeout aborted, which
        exit with code 1 (worker-timeout).
        """
        timed_out = {
            event.worker_pid
            for event in self.gunicorn_events
            if event.signature == "gunicorn.worker_timeout"
        }
        return [
            event
            for event in self.gunicorn_events
            if _is_crash(event) and event.worker_pid not in timed_out
        ]

    def for_too_big_header(self, candidate) -> None:
        measured = []
        for run in self._probe_verdicts("headers_too_big"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
            if run.outcome.header_bytes:
                measured.append(run.outcome.header_bytes)
        count = self._log(
            candidate, "nginx.too_big_header", "upstream sent too big header"
        )
        if not candidate.points:
            return
        candidate.verdict = (
            "the app's response headers are larger than nginx's proxy_buffer_size"
            + (f" ({_plural(count, 'response')} refused)" if count else "")
        )
        if measured:
            size = _buffer_kilobytes(max(measured))
            candidate.fix = (
                f"proxy_buffer_size {size}k; proxy_buffers 8 {size}k;  (in the"
                f" location; the largest headers measured were {max(measured)}"
                " bytes), or make the app send smaller headers"
            )

    def for_invalid_header(self, candidate) -> None:
        count = self._log(
            candidate, "nginx.invalid_header", "upstream sent invalid header"
        )
        for run in self._probe_verdicts("not_http"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        if candidate.points:
            candidate.verdict = (
                "nginx receives something that is not an HTTP response"
                + (f" ({_plural(count, 'time')})" if count else "")
            )
            candidate.fix = (
                "Check that nginx uses proxy_pass (not uwsgi_pass/fastcgi_pass) and"
                " that the app writes no bytes outside the response"
            )

    def for_workers_busy(self, candidate) -> None:
        for run in self._probe_verdicts("no_response", "connect_timeout"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        self._log(
            candidate,
            "nginx.connect_timeout",
            "upstream timed out (110) while connecting",
        )
        self._log(candidate, "nginx.no_live_upstreams", "no live upstreams")
        if candidate.points:
            candidate.verdict = (
                "gunicorn accepts connections but no worker answers in time"
            )

    def for_app_errors(self, candidate) -> None:
        for run in self._probe_verdicts("http_5xx"):
            candidate.add(PROBE_POINTS, f"probe {run.bind}: {run.outcome.detail}")
        self._log(
            candidate,
            "gunicorn.error_handling_request",
            "Error handling request",
            "gunicorn",
        )
        if candidate.points:
            candidate.verdict = (
                "the app answers with a server error itself; nginx passes it on"
                " unchanged, so these are not 502s made by nginx"
            )
            candidate.fix = "Read the app's traceback in gunicorn's error log"
        elif "gunicorn.timeout_abort" in self.gunicorn_log:
            candidate.ruled_out_because = (
                "the only 'Error handling request' lines are the 500s of requests"
                " that gunicorn's timeout aborted (see worker-timeout)"
            )

    def for_read_timeout(self, candidate) -> None:
        count = self._log(
            candidate,
            "nginx.read_timeout",
            "upstream timed out (110) while reading response header",
        )
        for run in self._probe_verdicts("slow"):
            candidate.add(PROBE_POINTS // 2, f"probe {run.bind}: {run.outcome.detail}")
        if candidate.points:
            wait = self._nginx_read_timeout()
            candidate.verdict = (
                "nginx stops waiting"
                + (f" after {wait:g} s" if wait else "")
                + " and answers 504"
                + (f" ({_plural(count, 'time')})" if count else "")
                + "; these are 504 Gateway Timeout, not 502"
            )
            candidate.fix = (
                "Make the slow requests faster, or raise proxy_read_timeout (and"
                " gunicorn's timeout with it)"
            )
