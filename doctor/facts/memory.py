"""CPUs and memory the workers may use, and the memory the running workers use.

Host figures come from ``os.cpu_count()``, the CPU affinity mask and
``psutil.virtual_memory()``. Limits come from the cgroup a process runs in,
read from the cgroup filesystem: ``cpu.max`` and ``memory.max`` on cgroup v2,
``cpu.cfs_quota_us``/``cpu.cfs_period_us`` and ``memory.limit_in_bytes`` on
cgroup v1. A limit on an ancestor cgroup applies too, so the lowest limit on
the path from the process's cgroup up to the mount point wins.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from pathlib import Path
from typing import NamedTuple

from doctor.context import Context, FactUnavailable, fact

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes, which is
# 9223372036854771712 with 4 KiB pages. Anything this large means no limit.
V1_UNLIMITED = 1 << 62
MIB = 1 << 20
GIB = 1 << 30


def format_bytes(size: float) -> str:
    """Render a byte count in MiB, or in GiB from 1 GiB up."""
    if size >= GIB:
        return f"{size / GIB:.2f} GiB"
    return f"{size / MIB:.1f} MiB"


# --- cgroup limits ------------------------------------------------------------


class CgroupMount(NamedTuple):
    """A mounted cgroup hierarchy, from one line of /proc/self/mountinfo."""

    root: str
    point: str
    version: int
    controllers: frozenset[str]


class Limit(NamedTuple):
    """A limit read from a file, with the file and its text for evidence."""

    value: float
    path: str
    text: str

    def row(self) -> str:
        return f"{self.path}: {self.text}"


class CgroupLimits(NamedTuple):
    """The lowest CPU quota (in cores) and memory limit (in bytes) that apply."""

    cpu: Limit | None = None
    memory: Limit | None = None


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """Return the cgroup v1 and v2 mounts listed in a mountinfo file."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 5 or len(fields) < separator + 3:
            continue
        fstype = fields[separator + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        super_options = frozenset(fields[separator + 3].split(","))
        mounts.append(
            CgroupMount(
                root=_unescape(fields[3]),
                point=_unescape(fields[4]),
                version=2 if fstype == "cgroup2" else 1,
                controllers=super_options if fstype == "cgroup" else frozenset(),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> list[tuple[str, frozenset[str], str]]:
    """Return (hierarchy id, controllers, path) for each line of /proc/PID/cgroup."""
    memberships = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        names = frozenset(name for name in controllers.split(",") if name)
        memberships.append((hierarchy, names, path))
    return memberships


def _cgroup_dirs(mount: CgroupMount, path: str, root: Path) -> list[Path]:
    """Return the directories from the cgroup ``path`` up to the mount point.

    The cgroup path is relative to the reader's cgroup namespace, and the
    mount shows the hierarchy from ``mount.root`` down. A path outside that
    root (a container without its own cgroup namespace) maps to the mount
    point itself, which is then the container's own cgroup.
    """
    top = root / mount.point.lstrip("/")
    relative = posixpath.relpath(path, mount.root) if path.startswith("/") else "."
    if relative.startswith(".."):
        relative = "."
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    dirs = []
    while True:
        dirs.append(top.joinpath(*parts))
        if not parts:
            return dirs
        parts.pop()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _display(path: Path, root: Path) -> str:
    if root == Path("/"):
        return str(path)
    return "/" + str(path.relative_to(root))


def _cpu_limit_in(directory: Path, version: int, root: Path) -> Limit | None:
    if version == 2:
        text = _read(directory / "cpu.max")
        if not text:
            return None
        fields = text.split()
        if len(fields) != 2 or fields[0] == "max":
            return None
        try:
            cores = int(fields[0]) / int(fields[1])
        except (ValueError, ZeroDivisionError):
            return None
        return Limit(cores, _display(directory / "cpu.max", root), text)
    quota = _read(directory / "cpu.cfs_quota_us")
    period = _read(directory / "cpu.cfs_period_us")
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    quota_path = _display(directory / "cpu.cfs_quota_us", root)
    return Limit(quota_us / period_us, quota_path, f"{quota_us} (period {period_us})")


def _memory_limit_in(directory: Path, version: int, root: Path) -> Limit | None:
    name = "memory.max" if version == 2 else "memory.limit_in_bytes"
    text = _read(directory / name)
    if not text or text == "max":
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    if limit >= V1_UNLIMITED:
        return None
    return Limit(limit, _display(directory / name, root), text)


# NOTE: on cgroup v1 an ancestor's memory limit applies only with
# memory.use_hierarchy = 1 (the default of current kernels), which is not read.
def _lowest(limits: list[Limit]) -> Limit | None:
    return min(limits, key=lambda limit: limit.value) if limits else None


def read_cgroup_limits(pid: int | str = "self", root: Path = Path("/")) -> CgroupLimits:
    """Read the CPU and memory limits of the cgroups process ``pid`` is in.

    ``root`` is the directory that contains proc/ and sys/, so that tests
    can point it at a tree laid out like them. Files that are missing or unreadable add no limit.
    """
    cgroup_text = _read(root / "proc" / str(pid) / "cgroup")
    mountinfo_text = _read(root / "proc" / "self" / "mountinfo")
    if cgroup_text is None or mountinfo_text is None:
        return CgroupLimits()
    mounts = parse_mountinfo(mountinfo_text)
    cpu_limits: list[Limit] = []
    memory_limits: list[Limit] = []
    for hierarchy, controllers, path in parse_proc_cgroup(cgroup_text):
        if hierarchy == "0" and not controllers:
            matching = [m for m in mounts if m.version == 2]
        else:
            matching = [
                m for m in mounts if m.version == 1 and m.controllers & controllers
            ]
        for mount in matching:
            for directory in _cgroup_dirs(mount, path, root):
                if mount.version == 2 or "cpu" in mount.controllers:
                    limit = _cpu_limit_in(directory, mount.version, root)
                    if limit is not None:
                        cpu_limits.append(limit)
                if mount.version == 2 or "memory" in mount.controllers:
                    limit = _memory_limit_in(directory, mount.version, root)
                    if limit is not None:
                        memory_limits.append(limit)
    return CgroupLimits(cpu=_lowest(cpu_limits), memory=_lowest(memory_limits))


def parse_cpu_quota(value: str) -> float | None:
    """Convert a systemd ``CPUQuota=`` value such as ``150%`` to cores."""
    text = value.strip()
    if not text.endswith("%"):
        return None
    try:
        percent = float(text[:-1])
    except ValueError:
        return None
    return percent / 100 if percent > 0 else None


# --- CPUs ---------------------------------------------------------------------


class CpuBudget(NamedTuple):
    """The CPUs gunicorn's workers may run on.

    ``online`` and ``usable`` are None under --root, where the machine that
    will run the tree is unknown. ``quota`` is a cgroup CPU quota or the
    unit's ``CPUQuota=``, in cores.
    """

    online: int | None
    usable: int | None
    quota: float | None
    evidence: tuple[str, ...]

    @property
    def cores(self) -> float | None:
        """Return the cores the workers can use at once, or None when unknown."""
        candidates = [c for c in (self.usable, self.quota) if c is not None]
        return min(candidates) if candidates else None

    @property
    def limited(self) -> bool:
        """Tell whether a quota or affinity mask allows fewer CPUs than are online."""
        cores = self.cores
        return self.online is not None and cores is not None and cores < self.online


def _master_pid(ctx: Context) -> int | None:
    try:
        return ctx.fact("master").pid
    except FactUnavailable:
        return None


def _unit_cpu_quota(ctx: Context) -> tuple[float | None, str | None]:
    service = ctx.target.service
    if service is None:
        return None, None
    entry = service.unit.value("Service", "CPUQuota")
    if entry is None:
        return None, None
    quota = parse_cpu_quota(entry.value)
    if quota is None:
        return None, None
    return quota, f"CPUQuota={entry.value} ({entry.path}:{entry.line})"


@fact("cpu_budget")
def cpu_budget(ctx: Context) -> CpuBudget:
    """Return the CPUs of this host, limited by the master's cgroup when it runs."""
    unit_quota, unit_row = _unit_cpu_quota(ctx)
    if not ctx.fs.is_live:
        rows = (unit_row,) if unit_row else ()
        return CpuBudget(None, None, unit_quota, rows)
    pid = _master_pid(ctx)
    online = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(pid or 0))
    except OSError:
        usable = online
    rows = [f"os.cpu_count(): {online}"]
    if usable != online:
        owner = f"pid {pid}" if pid else "the doctor"
        rows.append(f"CPU affinity of {owner}: {usable} CPUs")
    quotas: list[tuple[float, str]] = []
    limits = read_cgroup_limits(pid or "self")
    if limits.cpu is not None:
        owner = f"master pid {pid}" if pid else "the doctor"
        quotas.append((limits.cpu.value, f"cgroup of {owner}: {limits.cpu.row()}"))
    # A running master's cgroup already carries the unit's CPUQuota=.
    if unit_quota is not None and pid is None:
        quotas.append((unit_quota, unit_row))
    quota = None
    if quotas:
        quota, row = min(quotas)
        rows.append(row)
    return CpuBudget(online, usable, quota, tuple(rows))


# --- memory -------------------------------------------------------------------


class MemoryBudget(NamedTuple):
    """Memory on this host, and the cgroup limit of the master when there is one."""

    available: int
    total: int
    cgroup_limit: Limit | None


@fact("memory_budget")
def memory_budget(ctx: Context) -> MemoryBudget:
    if not ctx.fs.is_live:
        raise FactUnavailable(
            f"the memory of the machine that runs the tree under --root {ctx.fs.root}"
            " is unknown"
        )
    import psutil

    memory = psutil.virtual_memory()
    limits = read_cgroup_limits(_master_pid(ctx) or "self")
    return MemoryBudget(int(memory.available), int(memory.total), limits.memory)


class ProcessMemory(NamedTuple):
    """Memory of one process in bytes. ``uss`` and ``pss`` need /proc/PID/smaps."""

    pid: int
    role: str
    rss: int
    uss: int | None = None
    pss: int | None = None

    def size(self, metric: str) -> int:
        value = {"PSS": self.pss, "USS": self.uss, "RSS": self.rss}[metric]
        if value is None:
            raise ValueError(f"pid {self.pid} has no {metric} figure")
        return value

    def row(self) -> str:
        figures = [f"RSS {format_bytes(self.rss)}"]
        if self.uss is not None:
            figures.insert(0, f"USS {format_bytes(self.uss)}")
        if self.pss is not None:
            figures.insert(0, f"PSS {format_bytes(self.pss)}")
        return f"{self.role} pid {self.pid}: {', '.join(figures)}"


def choose_metric(processes: list[ProcessMemory]) -> str:
    """Pick the figure every process has: PSS, else USS, else RSS.

    PSS splits each shared page among the processes that map it, so the PSS
    of the master and its workers add up to what they use together. USS
    leaves shared pages out, and RSS counts them once in every process.
    """
    if processes and all(p.pss is not None for p in processes):
        return "PSS"
    if processes and all(p.uss is not None for p in processes):
        return "USS"
    return "RSS"


def measure_process(pid: int, role: str) -> tuple[ProcessMemory | None, str | None]:
    """Measure one process, returning None for one that is gone, and any problem."""
    import psutil

    try:
        process = psutil.Process(pid)
        try:
            full = process.memory_full_info()
        except psutil.AccessDenied:
            basic = process.memory_info()
            problem = (
                f"/proc/{pid}/smaps_rollup is not readable to the doctor, so"
                " only RSS is known. Run the doctor as root or as the"
                " service's user for PSS."
            )
            return ProcessMemory(pid, role, int(basic.rss)), problem
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None, None
    except psutil.AccessDenied:
        return None, f"the memory of pid {pid} is not readable to the doctor"
    return (
        ProcessMemory(
            pid,
            role,
            int(full.rss),
            getattr(full, "uss", None),
            getattr(full, "pss", None),
        ),
        None,
    )


class WorkerMemory(NamedTuple):
    """Memory of a running master and its workers, in one metric."""

    master: ProcessMemory
    workers: tuple[ProcessMemory, ...]
    metric: str
    problems: tuple[str, ...] = ()

    @property
    def largest_worker(self) -> ProcessMemory:
        return max(self.workers, key=lambda w: w.size(self.metric))

    @property
    def in_use(self) -> int:
        """Return what the master and workers use now, in the chosen metric."""
        processes = (self.master, *self.workers)
        return sum(p.size(self.metric) for p in processes)


@fact("worker_memory")
def worker_memory(ctx: Context) -> WorkerMemory:
    """Measure the running master and each of its workers."""
    master = ctx.fact("master")
    problems: list[str] = []
    measured_master, problem = measure_process(master.pid, "master")
    if measured_master is None:
        raise FactUnavailable(
            problem or f"master pid {master.pid} exited while it was measured"
        )
    if problem:
        problems.append(problem)
    workers = []
    for worker in master.workers:
        measured, problem = measure_process(worker.pid, "worker")
        if problem:
            problems.append(problem)
        if measured is not None:
            workers.append(measured)
    if not workers:
        raise FactUnavailable(f"master pid {master.pid} runs no worker to measure")
    metric = choose_metric([measured_master, *workers])
    return WorkerMemory(measured_master, tuple(workers), metric, tuple(problems))


# --- the projection -----------------------------------------------------------

# Above this share of the memory they may use, the workers leave too little
# room. A request may need more than usual, the page cache needs some, and a
# worker that max_requests or a reload starts runs beside the old one.
MEMORY_SHARE_LIMIT = 0.8


class MemoryProjection(NamedTuple):
    """Memory that ``workers`` workers and the master need, against a capacity."""

    workers: int
    per_worker: int
    master: int
    capacity: int

    @property
    def total(self) -> int:
        return self.workers * self.per_worker + self.master

    @property
    def share(self) -> float:
        return self.total / self.capacity if self.capacity > 0 else math.inf

    def exceeds(self, limit: float = MEMORY_SHARE_LIMIT) -> bool:
        return self.share > limit

    def workers_within(self, limit: float = MEMORY_SHARE_LIMIT) -> int:
        """Return the most workers whose projection stays within ``limit``."""
        if self.per_worker <= 0:
            return self.workers
        room = limit * self.capacity - self.master
        return max(0, math.floor(room / self.per_worker))


def memory_capacity(
    available: int, in_use: int, cgroup_limit: int | None
) -> tuple[int, str]:
    """Return the memory gunicorn may use in all, and which bound set it.

    The host's available memory excludes what the running master and workers
    already use. That use is added back, because it is memory they keep
    using. A cgroup limit bounds everything in the cgroup, so it applies as
    it is.
    """
    host = available + in_use
    if cgroup_limit is not None and cgroup_limit < host:
        return cgroup_limit, "cgroup"
    return host, "host"
