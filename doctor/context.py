"""The Context a check reads: the target plus facts computed once, on demand.

A fact is a named value gathered from one source of truth (effective
settings, the venv, the systemd unit, ...). Providers register with
:func:`fact`; the first check that asks for a fact computes it, under a
per-fact lock, and every later check gets the cached value. A provider that
cannot produce its fact raises :class:`FactUnavailable` with the reason, and
every check that needs the fact reports ``skipped`` with that reason.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from doctor.rootfs import RootFS

FactProvider = Callable[["Context"], Any]

_PROVIDERS: dict[str, FactProvider] = {}

# The module that provides each built-in fact, imported on the first lookup
# of that fact, so that a command imports only the providers it uses.
FACT_MODULES = {
    "settings": "doctor.facts.settings",
    "settings_probe": "doctor.facts.settings",
    "venv": "doctor.facts.venv",
    "venv_layout": "doctor.facts.venv",
    "unit": "doctor.facts.unit",
    "app_import": "doctor.facts.appimport",
    "app_source": "doctor.facts.appsource",
    "requirements": "doctor.facts.requirements",
    "process_table": "doctor.facts.processes",
    "listeners": "doctor.facts.processes",
    "masters": "doctor.facts.processes",
    "master": "doctor.facts.processes",
    "log_setup": "doctor.facts.logfiles",
    "logrotate": "doctor.facts.logfiles",
    "pidfile": "doctor.facts.pidfile",
    "nginx": "doctor.facts.nginx",
    "upstream_probes": "doctor.facts.upstream_probes",
    "triage": "doctor.triage",
    "gunicorn_log": "doctor.facts.logevents",
    "nginx_log": "doctor.facts.logevents",
    "kernel_log": "doctor.facts.logevents",
    "binds": "doctor.facts.binds",
    "listen_sockets": "doctor.facts.binds",
    "access_log": "doctor.facts.accesslog",
    "cpu_budget": "doctor.facts.memory",
    "memory_budget": "doctor.facts.memory",
    "worker_memory": "doctor.facts.memory",
}


class FactUnavailable(Exception):
    """Raised by a provider, or by ``Context.fact``, when a fact cannot be had."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def fact(name: str) -> Callable[[FactProvider], FactProvider]:
    """Register the decorated function as the provider of fact ``name``."""

    def decorate(provider: FactProvider) -> FactProvider:
        _PROVIDERS[name] = provider
        return provider

    return decorate


@dataclass
class Options:
    """Run-wide switches that shape how facts are gathered."""

    static: bool = False
    probe_timeout: float = 20.0
    verbose: bool = False
    # Whether the settings probe also imports the app; the CLI turns it off
    # when no selected check needs the import.
    import_app: bool = True
    # Log window: only lines newer than ``since`` (an aware datetime), and
    # never more than ``log_bytes`` from the end of a file.
    since: datetime | None = None
    log_bytes: int = 4 << 20
    # Upstream probe: request path, and whether to go through nginx too.
    probe_path: str = "/"
    through_nginx: bool = False
    # Idle timeout, in seconds, of a load balancer in front of nginx or
    # gunicorn (--lb-idle-timeout), or None when there is none.
    lb_idle_timeout: float | None = None


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    value: Any = None
    error: FactUnavailable | None = None


class Context:
    def __init__(self, target, options: Options | None = None):
        self.target = target
        self.options = options or Options()
        self.fs: RootFS = target.fs
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        # Set by ``cancel``: probes started for this Context stop at once.
        self.cancelled = threading.Event()
        self._prefetching: list[threading.Thread] = []

    @property
    def static(self) -> bool:
        return self.options.static

    def fact(self, name: str) -> Any:
        """Return fact ``name``, computing it on first use."""
        provider = _provider(name)
        with self._slots_lock:
            slot = self._slots.setdefault(name, _Slot())
        with slot.lock:
            if not slot.done:
                try:
                    slot.value = provider(self)
                except FactUnavailable as exc:
                    slot.error = exc
                slot.done = True
        if slot.error is not None:
            raise slot.error
        return slot.value

    def prefetch(self, *names: str) -> None:
        """Start computing the facts ``names``, in order, in one background thread.

        Used for a fact that starts a slow child process, so that the process
        runs while the checks are still being set up, and for facts to gather
        while it runs. One thread per call, because the facts compete for the
        interpreter lock anyway, and every extra thread slows the others.
        """

        def compute() -> None:
            for name in names:
                # A fact that failed is computed again by the check that
                # needs it, and that check reports the reason or the error.
                with contextlib.suppress(Exception):
                    self.fact(name)

        thread = threading.Thread(target=compute, name=f"fact-{names[0]}", daemon=True)
        self._prefetching.append(thread)
        thread.start()

    def cancel(self, wait: float) -> None:
        """Stop the probes of this Context and wait up to ``wait`` seconds.

        A probe that is running is killed with its process group. Facts
        computed after this are not to be trusted, so the caller drops the
        Context.
        """
        self.cancelled.set()
        deadline = time.monotonic() + wait
        for thread in self._prefetching:
            thread.join(max(0.0, deadline - time.monotonic()))

    def peek(self, name: str) -> Any | None:
        """Return fact ``name`` when it was already computed and available."""
        slot = self._slots.get(name)
        if slot is None or not slot.done or slot.error is not None:
            return None
        return slot.value


def _provider(name: str) -> FactProvider:
    if name not in _PROVIDERS and name in FACT_MODULES:
        importlib.import_module(FACT_MODULES[name])
    try:
        return _PROVIDERS[name]
    except KeyError:
        raise KeyError(f"no provider registered for fact {name!r}") from None
