"""The workers checks: count, memory, concurrency, restarts, preload, heartbeats.

Settings come from the real gunicorn 27 of the session venv or from the
static reader (``--static``), trees under ``--root`` stand for deployments
on other machines, and the memory check measures a real gunicorn master
started on 127.0.0.1. The memory threshold is tested with numbers, because
making a real master approach the host's memory would hurt the machine.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from checks.workers import (
    container_markers,
    is_cpu_count_pattern,
    sends_hup,
    suggested_workers,
)
from doctor.facts.memory import (
    MIB,
    CgroupMount,
    MemoryProjection,
    ProcessMemory,
    choose_metric,
    memory_capacity,
    parse_cpu_quota,
    parse_mountinfo,
    read_cgroup_limits,
)
from doctor.facts.pidfile import read_mounts
from tests.helpers import copy_fixture, findings_of, run_json
from tests.servers import Gunicorn, free_port, wait_for_port, wait_for_workers

APP_SOURCE = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""
# The runner's own GUNICORN_CMD_ARGS must not leak into the service's argv.
CLEAN_ENV = {"GUNICORN_CMD_ARGS": ""}


@dataclass(frozen=True)
class Mode:
    """How the doctor gets the settings: the venv's gunicorn, or the static reader."""

    name: str
    venv: Path | None

    @property
    def args(self) -> list[str]:
        return ["--static"] if self.venv is None else ["--venv", str(self.venv)]


@pytest.fixture(params=["gunicorn-27", "static"])
def mode(request) -> Mode:
    if request.param == "static":
        return Mode("static", None)
    return Mode("gunicorn-27", request.getfixturevalue("venv_gunicorn_new"))


def make_project(tmp_path: Path, config: str) -> Path:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "app.py").write_text(APP_SOURCE)
    (project / "gunicorn.conf.py").write_text(config)
    return project


def check_project(project: Path, mode: Mode, select: str = "workers", env=None):
    report, result = run_json(
        "check",
        "--chdir",
        str(project),
        *mode.args,
        "-c",
        "gunicorn.conf.py",
        "app:app",
        "--select",
        select,
        env={**CLEAN_ENV, **(env or {})},
    )
    assert report["exit_code"] == result.returncode
    return report


def make_root(tmp_path: Path, config: str, *service_lines: str) -> Path:
    """Write a tree for --root: a unit running gunicorn in /srv/shop."""
    root = tmp_path / "root"
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    project = root / "srv/shop"
    project.mkdir(parents=True)
    (project / "app.py").write_text(APP_SOURCE)
    (project / "gunicorn.conf.py").write_text(config)
    lines = [
        "[Service]",
        "WorkingDirectory=/srv/shop",
        "ExecStart=/srv/shop/venv/bin/gunicorn -c gunicorn.conf.py app:app",
        *service_lines,
    ]
    (units / "shop.service").write_text("\n".join(lines) + "\n")
    return root


def check_root(root: Path, select: str = "workers"):
    report, result = run_json("check", "--root", str(root), "--select", select)
    assert report["exit_code"] == result.returncode
    return report


def only(report: dict, check: str) -> dict:
    found = findings_of(report, check)
    assert len(found) == 1, found
    return found[0]


def runner_cores() -> float:
    """Return the cores the doctor computes for this machine."""
    cores = float(len(os.sched_getaffinity(0)))
    quota = read_cgroup_limits().cpu
    return min(cores, quota.value) if quota is not None else cores


# --- pure functions -----------------------------------------------------------


def test_projection_threshold_numbers():
    below = MemoryProjection(workers=4, per_worker=100, master=50, capacity=1000)
    assert below.total == 450
    assert below.share == 0.45
    assert not below.exceeds()
    at_limit = MemoryProjection(workers=7, per_worker=100, master=100, capacity=1000)
    assert at_limit.share == 0.8
    assert not at_limit.exceeds()
    above = MemoryProjection(workers=8, per_worker=100, master=100, capacity=1000)
    assert above.exceeds()
    assert above.workers_within() == 7


def test_projection_nothing_fits():
    projection = MemoryProjection(workers=2, per_worker=500, master=900, capacity=1000)
    assert projection.exceeds()
    assert projection.workers_within() == 0
    assert MemoryProjection(1, 1, 1, 0).exceeds()


def test_capacity_takes_the_lower_bound():
    assert memory_capacity(1000, 200, None) == (1200, "host")
    assert memory_capacity(1000, 200, 5000) == (1200, "host")
    assert memory_capacity(1000, 200, 800) == (800, "cgroup")


def test_metric_prefers_pss():
    full = ProcessMemory(1, "master", rss=30, uss=10, pss=20)
    rss_only = ProcessMemory(2, "worker", rss=40)
    assert choose_metric([full, full]) == "PSS"
    assert choose_metric([full, rss_only]) == "RSS"
    assert choose_metric([ProcessMemory(3, "worker", rss=5, uss=2)]) == "USS"
    assert full.size("PSS") == 20
    with pytest.raises(ValueError, match="no PSS"):
        rss_only.size("PSS")


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ("multiprocessing.cpu_count() * 2 + 1", True),
        ("multiprocessing.cpu_count()*2+1", True),
        ("(multiprocessing.cpu_count() * 2) + 1", True),
        ("2 * multiprocessing.cpu_count() + 1", False),
        ("multiprocessing.cpu_count() * 4 + 1", False),
        ("os.cpu_count() * 2 + 1", False),
        ("cpu_count() * 2 + 1", False),
        ("multiprocessing.cpu_count( * 2", False),
    ],
)
def test_cpu_count_pattern(expression, matches):
    assert is_cpu_count_pattern(expression) is matches


@pytest.mark.parametrize(
    ("argv", "hup"),
    [
        (["/bin/kill", "-HUP", "$MAINPID"], True),
        (["/bin/kill", "-s", "HUP", "$MAINPID"], True),
        (["/usr/bin/kill", "--signal", "SIGHUP", "$MAINPID"], True),
        (["kill", "--signal=hup", "$MAINPID"], True),
        (["/bin/kill", "-1", "$MAINPID"], True),
        (["/bin/kill", "-USR2", "$MAINPID"], False),
        (["/bin/kill", "-s", "TERM", "$MAINPID"], False),
        (["/bin/systemctl", "restart", "shop"], False),
        ([], False),
    ],
)
def test_sends_hup(argv, hup):
    assert sends_hup(argv) is hup


def test_cpu_quota_values():
    assert parse_cpu_quota("150%") == 1.5
    assert parse_cpu_quota(" 20% ") == 0.2
    assert parse_cpu_quota("0%") is None
    assert parse_cpu_quota("2") is None
    assert parse_cpu_quota("lots%") is None


def test_suggested_workers():
    assert suggested_workers(2) == 5
    assert suggested_workers(1.5) == 4
    assert suggested_workers(0.5) == 2


# --- cgroup limits --------------------------------------------------------------
# This machine runs cgroup v1 and the test may not create cgroups, so trees
# laid out like /proc and /sys stand in for the v2 and nested cases.

MOUNTINFO_V2 = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    "31 23 0:27 / /dev/shm rw - tmpfs tmpfs rw\n"
)
MOUNTINFO_V1 = (
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
)


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_mountinfo_cgroup_mounts():
    mounts = parse_mountinfo(MOUNTINFO_V2 + MOUNTINFO_V1 + "garbage line\n")
    assert mounts[0] == CgroupMount("/", "/sys/fs/cgroup", 2, frozenset())
    assert mounts[1].point == "/sys/fs/cgroup/cpu,cpuacct"
    assert mounts[1].controllers == {"rw", "cpu", "cpuacct"}
    assert len(mounts) == 3


def test_cgroup_v2_lowest_limit_wins(tmp_path):
    write_file(tmp_path / "proc/self/mountinfo", MOUNTINFO_V2)
    write_file(tmp_path / "proc/42/cgroup", "0::/system.slice/shop.service\n")
    base = tmp_path / "sys/fs/cgroup"
    write_file(base / "system.slice/shop.service/memory.max", "536870912\n")
    write_file(base / "system.slice/shop.service/cpu.max", "max 100000\n")
    write_file(base / "system.slice/memory.max", "268435456\n")
    write_file(base / "system.slice/cpu.max", "150000 100000\n")
    limits = read_cgroup_limits(42, root=tmp_path)
    assert limits.memory.value == 268435456
    assert limits.memory.path == "/sys/fs/cgroup/system.slice/memory.max"
    assert limits.cpu.value == 1.5
    assert limits.cpu.row() == "/sys/fs/cgroup/system.slice/cpu.max: 150000 100000"


def test_cgroup_v2_unlimited(tmp_path):
    write_file(tmp_path / "proc/self/mountinfo", MOUNTINFO_V2)
    write_file(tmp_path / "proc/self/cgroup", "0::/user.slice\n")
    write_file(tmp_path / "sys/fs/cgroup/user.slice/memory.max", "max\n")
    write_file(tmp_path / "sys/fs/cgroup/user.slice/cpu.max", "max 100000\n")
    limits = read_cgroup_limits(root=tmp_path)
    assert limits.memory is None
    assert limits.cpu is None


def test_cgroup_v1_limits(tmp_path):
    write_file(tmp_path / "proc/self/mountinfo", MOUNTINFO_V1)
    write_file(
        tmp_path / "proc/7/cgroup",
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
    )
    memory = tmp_path / "sys/fs/cgroup/memory"
    write_file(memory / "memory.limit_in_bytes", "9223372036854771712\n")
    write_file(memory / "docker/abc/memory.limit_in_bytes", "1073741824\n")
    cpu = tmp_path / "sys/fs/cgroup/cpu,cpuacct/docker/abc"
    write_file(cpu / "cpu.cfs_quota_us", "50000\n")
    write_file(cpu / "cpu.cfs_period_us", "100000\n")
    limits = read_cgroup_limits(7, root=tmp_path)
    assert limits.memory.value == 1073741824
    assert limits.cpu.value == 0.5
    assert limits.cpu.text == "50000 (period 100000)"


def test_cgroup_outside_mount_root(tmp_path):
    # A container without its own cgroup namespace: the mount shows only the
    # container's cgroup, while /proc/self/cgroup names the host's path.
    write_file(
        tmp_path / "proc/self/mountinfo",
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    )
    write_file(tmp_path / "proc/self/cgroup", "4:memory:/docker/abc\n")
    write_file(tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648\n")
    limits = read_cgroup_limits(root=tmp_path)
    assert limits.memory.value == 2147483648


def test_cgroup_files_missing(tmp_path):
    assert read_cgroup_limits(root=tmp_path).memory is None
    write_file(tmp_path / "proc/self/mountinfo", MOUNTINFO_V2)
    write_file(tmp_path / "proc/self/cgroup", "0::/gone\n")
    assert read_cgroup_limits(root=tmp_path).cpu is None


def test_container_markers(tmp_path):
    assert container_markers(tmp_path) == []
    (tmp_path / ".dockerenv").touch()
    assert container_markers(tmp_path) == ["/.dockerenv exists"]
    podman = tmp_path / "podman"
    write_file(podman / "run/.containerenv", "")
    assert container_markers(podman) == ["/run/.containerenv exists"]
    kubernetes = tmp_path / "kubernetes"
    write_file(kubernetes / "proc/1/cgroup", "0::/kubepods/burstable/pod1/abc\n")
    assert container_markers(kubernetes) == [
        "/proc/1/cgroup: 0::/kubepods/burstable/pod1/abc"
    ]
    host = tmp_path / "host"
    write_file(host / "proc/1/cgroup", "0::/init.scope\n")
    assert container_markers(host) == []


# --- workers-count ------------------------------------------------------------


@pytest.mark.fires("workers-count")
def test_count_far_above_cores(tmp_path, mode):
    workers = 4 * (os.cpu_count() or 1) + 1
    project = make_project(tmp_path, f"workers = {workers}\n")
    finding = only(check_project(project, mode, "workers-count"), "workers-count")
    cores = runner_cores()
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith(f"workers = {workers} is more than")
    assert f"{cores:g} CPU core" in finding["title"]
    assert finding["fix"] == f"workers = {suggested_workers(cores)}"
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": 1,
    }
    assert f"os.cpu_count(): {os.cpu_count()}" in finding["evidence"]


@pytest.mark.quiet("workers-count")
def test_count_within_cores(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\n")
    finding = only(check_project(project, mode, "workers-count"), "workers-count")
    assert finding["severity"] == "ok", finding
    assert finding["title"].startswith("workers = 2 fits")


@pytest.mark.quiet("workers-count")
def test_count_pattern_is_estimated(tmp_path):
    project = make_project(
        tmp_path,
        "import multiprocessing\n\nworkers = multiprocessing.cpu_count() * 2 + 1\n",
    )
    finding = only(
        check_project(project, Mode("static", None), "workers-count"), "workers-count"
    )
    online = os.cpu_count()
    estimated = 2 * online + 1
    cores = runner_cores()
    expected = "warning" if estimated > 4 * cores else "ok"
    assert finding["severity"] == expected, finding
    assert finding["title"].startswith(f"workers = {estimated} (estimated)")
    assert any(
        f"os.cpu_count() = {online}: {estimated}" in row for row in finding["evidence"]
    ), finding["evidence"]


def test_count_other_expression_skipped(tmp_path):
    project = make_project(tmp_path, "import os\n\nworkers = os.cpu_count() + 4\n")
    report = check_project(project, Mode("static", None), "workers")
    for check_id in ("workers-count", "workers-concurrency"):
        finding = only(report, check_id)
        assert finding["severity"] == "skipped", finding
        assert "workers = os.cpu_count() + 4 is an expression" in finding["detail"]


def test_count_seed_pattern_under_root(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    finding = only(check_root(root, "workers-count"), "workers-count")
    assert finding["severity"] == "info", finding
    assert finding["title"].startswith(
        "workers = multiprocessing.cpu_count() * 2 + 1 gives 2 × CPUs + 1"
    )
    assert "unknown" in finding["detail"]
    assert finding["location"] == {
        "path": "/var/www/ecommerce_knowledge/gunicorn_config.py",
        "line": 4,
    }


def test_count_under_root_without_quota(tmp_path):
    root = make_root(tmp_path, "workers = 9\n")
    finding = only(check_root(root, "workers-count"), "workers-count")
    assert finding["severity"] == "info", finding
    assert finding["title"] == "workers = 9 suits a machine with at least 3 CPU cores"


@pytest.mark.fires("workers-count")
def test_count_web_concurrency_and_cpu_quota(tmp_path):
    root = make_root(
        tmp_path, "timeout = 30\n", "Environment=WEB_CONCURRENCY=12", "CPUQuota=100%"
    )
    finding = only(check_root(root, "workers-count"), "workers-count")
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith("workers = 12 is more than 1 CPU core")
    assert finding["fix"] == "workers = 3"
    assert "CPUQuota=100% (/etc/systemd/system/shop.service:5)" in finding["evidence"]
    assert any("$WEB_CONCURRENCY = 12" in row for row in finding["evidence"])


# --- workers-concurrency ------------------------------------------------------


@pytest.mark.fires("workers-concurrency")
def test_single_sync_worker(tmp_path, mode):
    project = make_project(tmp_path, 'bind = "127.0.0.1:8000"\nworkers = 1\n')
    finding = only(
        check_project(project, mode, "workers-concurrency"), "workers-concurrency"
    )
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith("workers = 1 with sync workers")
    assert finding["fix"] == f"workers = {suggested_workers(runner_cores())}"
    assert finding["location"]["line"] == 2


@pytest.mark.fires("workers-concurrency")
def test_single_gthread_thread(tmp_path, mode):
    project = make_project(tmp_path, 'worker_class = "gthread"\nworkers = 1\n')
    finding = only(
        check_project(project, mode, "workers-concurrency"), "workers-concurrency"
    )
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith("1 gthread worker with 1 thread")
    assert finding["fix"] == "threads = 4"
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": None,
    }


@pytest.mark.fires("workers-concurrency")
def test_single_gevent_connection(tmp_path):
    project = make_project(
        tmp_path, 'worker_class = "gevent"\nworkers = 1\nworker_connections = 1\n'
    )
    finding = only(
        check_project(project, Mode("static", None), "workers-concurrency"),
        "workers-concurrency",
    )
    assert finding["severity"] == "warning", finding
    assert "worker_connections = 1" in finding["title"]
    assert finding["fix"] == "worker_connections = 1000"
    assert finding["location"]["line"] == 3


def test_sync_with_threads_runs_gthread(tmp_path, mode):
    project = make_project(
        tmp_path, 'workers = 2\nworker_class = "sync"\nthreads = 4\n'
    )
    finding = only(
        check_project(project, mode, "workers-concurrency"), "workers-concurrency"
    )
    assert finding["severity"] == "info", finding
    assert finding["title"] == (
        "gunicorn runs gthread workers, not sync:"
        " 2 gthread workers × 4 threads = 8 requests at a time"
    )
    assert finding["location"]["line"] == 3


def test_seed_concurrency_under_root(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    finding = only(check_root(root, "workers-concurrency"), "workers-concurrency")
    assert finding["severity"] == "info", finding
    assert "(2 × CPUs + 1) gthread workers × 2 threads" in finding["title"]
    assert "at least 6 requests" in finding["title"]


@pytest.mark.quiet("workers-concurrency")
@pytest.mark.parametrize(
    ("config", "title"),
    [
        (
            'workers = 2\nworker_class = "gthread"\nthreads = 4\n',
            "2 gthread workers × 4 threads = 8 requests at a time",
        ),
        (
            "workers = 3\nworker_connections = 50\n",
            "3 sync workers × 1 request = 3 requests at a time",
        ),
        (
            'workers = 2\nworker_class = "gevent"\n',
            "2 gevent workers × 1000 worker_connections = 2000 connections at a time",
        ),
        (
            'workers = 2\nworker_class = "gthread"\nthreads = 8\nworker_connections = 3\n',
            "2 gthread workers × 3 worker_connections = 6 requests at a time",
        ),
    ],
)
def test_concurrency_above_one(tmp_path, config, title):
    project = make_project(tmp_path, config)
    finding = only(
        check_project(project, Mode("static", None), "workers-concurrency"),
        "workers-concurrency",
    )
    assert finding["severity"] == "ok", finding
    assert finding["title"] == title


def test_unknown_worker_class_concurrency(tmp_path):
    project = make_project(tmp_path, 'workers = 2\nworker_class = "tornado"\n')
    finding = only(
        check_project(project, Mode("static", None), "workers-concurrency"),
        "workers-concurrency",
    )
    assert finding["severity"] == "info", finding
    assert "cannot tell" in finding["title"]


# --- workers-recycling --------------------------------------------------------


@pytest.mark.fires("workers-recycling")
def test_max_requests_without_jitter(tmp_path, mode):
    project = make_project(tmp_path, "workers = 2\nmax_requests = 1000\n")
    finding = only(
        check_project(project, mode, "workers-recycling"), "workers-recycling"
    )
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith("max_requests = 1000 without")
    assert finding["fix"].startswith("max_requests_jitter = 100 ")
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": 2,
    }


@pytest.mark.fires("workers-recycling")
def test_max_requests_on_command_line(tmp_path):
    root = make_root(tmp_path, "workers = 2\n")
    unit = root / "etc/systemd/system/shop.service"
    unit.write_text(
        unit.read_text().replace(
            "-c gunicorn.conf.py", "-c gunicorn.conf.py --max-requests 500"
        )
    )
    finding = only(check_root(root, "workers-recycling"), "workers-recycling")
    assert finding["severity"] == "warning", finding
    assert finding["fix"].startswith("--max-requests-jitter 50 in ExecStart")
    assert finding["location"] == {
        "path": "/etc/systemd/system/shop.service",
        "line": 3,
    }


@pytest.mark.quiet("workers-recycling")
@pytest.mark.parametrize(
    ("config", "title"),
    [
        (
            "max_requests = 1000\nmax_requests_jitter = 100\n",
            (
                "max_requests = 1000 with max_requests_jitter = 100: each worker"
                " restarts after 1000-1100 requests"
            ),
        ),
        (
            "workers = 2\n",
            "max_requests is off: workers are not restarted after N requests",
        ),
    ],
)
def test_recycling_quiet(tmp_path, config, title):
    project = make_project(tmp_path, config)
    finding = only(
        check_project(project, Mode("static", None), "workers-recycling"),
        "workers-recycling",
    )
    assert finding["severity"] == "ok", finding
    assert finding["title"] == title


def test_jitter_without_max_requests(tmp_path):
    project = make_project(tmp_path, "max_requests_jitter = 50\n")
    finding = only(
        check_project(project, Mode("static", None), "workers-recycling"),
        "workers-recycling",
    )
    assert finding["severity"] == "info", finding
    assert finding["location"]["line"] == 1


# --- workers-preload ----------------------------------------------------------


@pytest.mark.fires("workers-preload")
def test_preload_with_reload(tmp_path, mode):
    project = make_project(tmp_path, "preload_app = True\nreload = True\n")
    finding = only(check_project(project, mode, "workers-preload"), "workers-preload")
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith("reload and preload_app are both on")
    assert finding["fix"].startswith("preload_app = False")
    assert finding["location"]["line"] == 2


@pytest.mark.fires("workers-preload")
def test_preload_with_hup_reload_seed(tmp_path):
    root = copy_fixture("ecommerce", tmp_path)
    finding = only(check_root(root, "workers-preload"), "workers-preload")
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith("systemctl reload sends HUP")
    assert finding["fix"].startswith("Deploy with systemctl restart ecommerce.service")
    assert finding["location"] == {
        "path": "/etc/systemd/system/ecommerce.service",
        "line": 12,
    }


@pytest.mark.fires("workers-preload")
def test_preload_flag_in_unit_with_hup(tmp_path):
    root = make_root(tmp_path, "workers = 2\n", "ExecReload=/bin/kill -s HUP $MAINPID")
    unit = root / "etc/systemd/system/shop.service"
    unit.write_text(unit.read_text().replace("app:app", "--preload app:app"))
    finding = only(check_root(root, "workers-preload"), "workers-preload")
    assert finding["severity"] == "warning", finding
    assert "preload_app = True (command line)" in finding["evidence"]
    assert finding["location"]["line"] == 4


@pytest.mark.quiet("workers-preload")
def test_preload_off(tmp_path, mode):
    project = make_project(tmp_path, "reload = True\n")
    finding = only(check_project(project, mode, "workers-preload"), "workers-preload")
    assert finding["severity"] == "ok", finding


def test_preload_without_hup_reload(tmp_path):
    root = make_root(
        tmp_path, "preload_app = True\n", "ExecReload=/bin/kill -USR2 $MAINPID"
    )
    finding = only(check_root(root, "workers-preload"), "workers-preload")
    assert finding["severity"] == "info", finding
    assert finding["fix"] == "Deploy with systemctl restart shop.service"
    assert finding["location"]["line"] == 1


# --- workers-tmp-dir ----------------------------------------------------------


def fstype_of(directory: str) -> str:
    """Return the filesystem type of ``directory`` from the mount table."""
    resolved = os.path.realpath(directory)
    best = None
    for mount in read_mounts():
        below = resolved == mount.point or resolved.startswith(
            mount.point.rstrip("/") + "/"
        )
        if below and (best is None or len(mount.point) >= len(best.point)):
            best = mount
    return best.fstype


def check_tmp_dir(project: Path, env=None) -> dict:
    """Run workers-tmp-dir live, with settings estimated for want of a venv."""
    report, result = run_json(
        "check",
        "--chdir",
        str(project),
        "-c",
        "gunicorn.conf.py",
        "app:app",
        "--select",
        "workers-tmp-dir",
        env={**CLEAN_ENV, "TMPDIR": "", "TEMP": "", "TMP": "", **(env or {})},
    )
    assert report["exit_code"] == result.returncode
    return only(report, "workers-tmp-dir")


@pytest.mark.quiet("workers-tmp-dir")
def test_heartbeat_in_dev_shm(tmp_path):
    if fstype_of("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    project = make_project(tmp_path, 'worker_tmp_dir = "/dev/shm"\n')
    finding = check_tmp_dir(project)
    assert finding["severity"] == "ok", finding
    assert finding["title"] == (
        "worker heartbeat files go to /dev/shm (tmpfs at /dev/shm), kept in memory"
    )


def test_heartbeat_dir_from_tmpdir(tmp_path):
    if fstype_of("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    project = make_project(tmp_path, "workers = 2\n")
    finding = check_tmp_dir(project, env={"TMPDIR": "/dev/shm"})
    assert finding["severity"] == "ok", finding
    assert "worker_tmp_dir unset, so $TMPDIR" in finding["evidence"]


@pytest.mark.fires("workers-tmp-dir")
def test_heartbeat_on_disk_in_container(tmp_path):
    markers = container_markers()
    disk = fstype_of("/tmp")
    if not markers or disk in ("tmpfs", "ramfs"):
        pytest.skip("needs a container whose /tmp is on a disk-backed filesystem")
    project = make_project(tmp_path, "workers = 2\n")
    finding = check_tmp_dir(project)
    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith(f"worker heartbeat files go to /tmp ({disk}")
    assert finding["title"].endswith("inside a container")
    assert finding["fix"] == 'worker_tmp_dir = "/dev/shm"'
    assert markers[0] in finding["evidence"]
    assert finding["location"] == {
        "path": str(project / "gunicorn.conf.py"),
        "line": None,
    }


def test_heartbeat_dir_missing(tmp_path):
    missing = tmp_path / "no-such-dir"
    project = make_project(tmp_path, f"worker_tmp_dir = {str(missing)!r}\n")
    finding = check_tmp_dir(project)
    assert finding["severity"] == "error", finding
    assert finding["title"] == f"worker_tmp_dir {missing} does not exist"
    assert finding["location"]["line"] == 1


def test_heartbeat_dir_relative_to_chdir(tmp_path):
    project = make_project(tmp_path, 'worker_tmp_dir = "heartbeat"\n')
    (project / "heartbeat").mkdir()
    finding = check_tmp_dir(project)
    assert finding["severity"] in ("ok", "warning"), finding
    assert finding["title"].startswith(
        f"worker heartbeat files go to {project / 'heartbeat'} ("
    )


def test_heartbeat_skipped_without_live_host(tmp_path):
    project = make_project(tmp_path, "workers = 2\n")
    static = only(
        check_project(project, Mode("static", None), "workers-tmp-dir"),
        "workers-tmp-dir",
    )
    assert static["severity"] == "skipped"
    root = copy_fixture("ecommerce", tmp_path)
    under_root = only(check_root(root, "workers-tmp-dir"), "workers-tmp-dir")
    assert under_root["severity"] == "skipped"
    assert "container" in under_root["detail"]


# --- workers-memory -----------------------------------------------------------

PER_WORKER = re.compile(
    r"per-worker memory: ([\d.]+) (MiB|GiB) (PSS|USS|RSS)"
    r" \(the largest of (\d+) running workers, pid (\d+)\)"
)


def start_healthy(tmp_path: Path, venv: Path, config_extra: str = "") -> tuple:
    project = copy_fixture("healthy", tmp_path)
    config = project / "gunicorn.conf.py"
    config.write_text(config.read_text() + config_extra)
    port = free_port()
    server = Gunicorn(
        venv,
        project,
        "-c",
        "gunicorn.conf.py",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "app:app",
    )
    try:
        wait_for_port(port)
        wait_for_workers(server.pid, 2)
    except BaseException:
        server.stop()
        raise
    return project, server


def check_master(project: Path, venv: Path, pid: int, select: str) -> dict:
    report, result = run_json(
        "check",
        "--pid",
        str(pid),
        "--venv",
        str(venv),
        "--select",
        select,
        cwd=project,
        env=CLEAN_ENV,
    )
    assert report["exit_code"] == result.returncode
    return report


def per_worker_row(finding: dict) -> re.Match:
    rows = [PER_WORKER.match(row) for row in finding["evidence"]]
    matches = [match for match in rows if match]
    assert len(matches) == 1, finding["evidence"]
    return matches[0]


@pytest.mark.quiet("workers-memory")
def test_memory_of_real_workers(tmp_path, venv_gunicorn_new):
    project, server = start_healthy(tmp_path, venv_gunicorn_new)
    try:
        workers = {child.pid for child in psutil.Process(server.pid).children()}
        report = check_master(
            project, venv_gunicorn_new, server.pid, "workers-memory,workers-tmp-dir"
        )
        finding = only(report, "workers-memory")
        match = per_worker_row(finding)
        largest_pid = int(match.group(5))
        measured_now = psutil.Process(largest_pid).memory_full_info().pss
        heartbeat = only(report, "workers-tmp-dir")
    finally:
        server.stop()

    assert finding["severity"] == "ok", finding
    assert finding["title"].startswith("2 workers and the master need about")

    size = float(match.group(1)) * (1024 if match.group(2) == "GiB" else 1)
    # Loose bounds: a Flask worker of gunicorn 27 on CPython 3.11 measured
    # 18 MiB PSS on the 2-core test machine.
    assert 2 <= size <= 512, match.group(0)
    assert match.group(3) == "PSS"
    assert int(match.group(4)) == 2
    assert largest_pid in workers
    assert abs(measured_now / MIB - size) <= 0.3 * size

    assert any(
        row.startswith(f"master pid {server.pid}: PSS") for row in finding["evidence"]
    )
    for pid in workers:
        assert any(
            row.startswith(f"worker pid {pid}: PSS") for row in finding["evidence"]
        )
    assert "workers: workers = 2 (" in " ".join(finding["evidence"])

    assert f"/proc/{server.pid}/mounts" in " ".join(heartbeat["evidence"])


@pytest.mark.fires("workers-memory")
def test_memory_for_configured_workers(tmp_path, venv_gunicorn_new):
    # The master runs 2 workers. The config then sets one worker per MiB of
    # the machine's memory, which cannot fit whatever a worker measures.
    project, server = start_healthy(tmp_path, venv_gunicorn_new)
    configured_workers = psutil.virtual_memory().total // MIB
    try:
        config = project / "gunicorn.conf.py"
        config.write_text(
            config.read_text().replace("workers = 2", f"workers = {configured_workers}")
        )
        finding = only(
            check_master(project, venv_gunicorn_new, server.pid, "workers-memory"),
            "workers-memory",
        )
    finally:
        server.stop()

    assert finding["severity"] == "warning", finding
    assert finding["title"].startswith(
        f"{configured_workers} workers and the master need about"
    )
    assert finding["location"]["line"] == 3

    match = per_worker_row(finding)
    per_worker = float(match.group(1)) * (1024 if match.group(2) == "GiB" else 1)
    fix = re.match(r"workers = (\d+), or add memory to the host", finding["fix"])
    assert fix, finding["fix"]
    fitting = int(fix.group(1))
    capacity_mib = psutil.virtual_memory().total / MIB
    assert 1 <= fitting < configured_workers
    assert fitting <= math.ceil(0.8 * capacity_mib / per_worker)


def test_memory_skipped_without_master(tmp_path):
    project = make_project(tmp_path, "workers = 2\n")
    report, _ = run_json(
        "check", "--chdir", str(project), "--select", "workers-memory", env=CLEAN_ENV
    )
    finding = only(report, "workers-memory")
    assert finding["severity"] == "skipped"
    assert finding["detail"] == (
        f"the workers' memory was not measured: no gunicorn master runs in {project}"
    )
    static = only(
        check_project(project, Mode("static", None), "workers-memory"),
        "workers-memory",
    )
    assert static["severity"] == "skipped"
    root = copy_fixture("ecommerce", tmp_path)
    under_root = only(check_root(root, "workers-memory"), "workers-memory")
    assert under_root["severity"] == "skipped"
    assert under_root["detail"].startswith("the workers' memory was not measured")
