"""Time gunicorn-doctor against gunicorn itself on this machine.

Two comparisons, each the ratio of median wall times over ``--runs`` runs:

- ``gunicorn-doctor --version`` against ``gunicorn --version``, both from the
  environment of the Python running this script;
- ``gunicorn-doctor check`` on a copy of ``fixtures/healthy`` against
  ``gunicorn --check-config`` on the same copy, which also imports the app.

The script builds a virtualenv with the fixture's requirements in a temporary
directory, unless ``--venv`` names one to reuse. It prints a table and, with
``--write``, rewrites ``docs/benchmarks.md``. A missed target is recorded, not
an error: the exit status is 1 only when a command failed to run.

Linux only: it reads /proc and waits on children with pidfd_open and wait4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = REPO_ROOT / "fixtures" / "healthy"
DOCS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"

VERSION_TARGET = 1.0
CHECK_TARGET = 1.5
DEFAULT_RUNS = 7
DEFAULT_TIMEOUT = 120.0
# Creating the venv downloads flask and gunicorn, which can take minutes.
VENV_BUILD_TIMEOUT = 600.0


GUNICORN_VERSION_CODE = "import gunicorn; print(gunicorn.__version__)"
TRACEBACK_MARKER = "Traceback (most recent call last):"


class CommandFailed(Exception):
    """A benchmarked command did not finish normally."""


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: Path | None = None
    accepted_exit_codes: frozenset[int] = frozenset({0})
    expects_json: bool = False

    def shell_line(self) -> str:
        """Return the command as one shell line, with ``cd`` when it has a cwd."""
        line = shlex.join(self.argv)
        if self.cwd is not None:
            return f"cd {shlex.quote(str(self.cwd))} && {line}"
        return line


@dataclass(frozen=True)
class RunResult:
    seconds: float
    max_rss_kib: int
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    max_rss_kib: list[int] = field(default_factory=list)

    def add(self, result: RunResult) -> None:
        self.seconds.append(result.seconds)
        self.max_rss_kib.append(result.max_rss_kib)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def peak_rss_mib(self) -> float:
        return max(self.max_rss_kib) / 1024


@dataclass
class Comparison:
    name: str
    doctor: Command
    baseline: Command
    target: float
    doctor_timings: Timings = field(default_factory=Timings)
    baseline_timings: Timings = field(default_factory=Timings)

    @property
    def ratio(self) -> float:
        return self.doctor_timings.median_ms / self.baseline_timings.median_ms

    @property
    def verdict(self) -> str:
        return "PASS" if self.ratio <= self.target else "MISS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command-line options."""
    parser = argparse.ArgumentParser(
        description="Time gunicorn-doctor against gunicorn on this machine."
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=DEFAULT_RUNS,
        help=f"Timed runs of each command after one warm-up (default {DEFAULT_RUNS}).",
    )
    parser.add_argument(
        "--venv",
        type=Path,
        help="Reuse this virtualenv, with gunicorn and flask installed, for the"
        " check comparison instead of building one in a temporary directory.",
    )
    parser.add_argument(
        "--doctor-venv",
        type=Path,
        help="Reuse this virtualenv, with gunicorn-doctor installed, instead of"
        " installing the doctor from this checkout into a new one.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="Seconds one command may run before it is killed and counted as"
        f" failed (default {DEFAULT_TIMEOUT:g}).",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="Rewrite docs/benchmarks.md with the results.",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.timeout <= 0:
        parser.error(
            f"--timeout must be a positive number of seconds, got {args.timeout}"
        )
    if args.venv is not None:
        args.venv = args.venv.absolute()
        for name in ("python", "gunicorn"):
            if not (args.venv / "bin" / name).is_file():
                parser.error(
                    f"--venv {args.venv}: bin/{name} not found; create the venv with"
                    f" 'python3 -m venv {args.venv}' and"
                    f" '{args.venv}/bin/pip install -r"
                    f" {FIXTURE_DIR / 'requirements.txt'}'"
                )
    return args


def wait_with_usage(
    process: subprocess.Popen, timeout: float
) -> tuple[int, os.struct_rusage]:
    """Reap ``process`` with wait4 and return its exit code and resource usage.

    Popen.wait cannot return the rusage, so this waits on a pidfd for the
    timeout and then reaps the child itself. On timeout it kills the child, which
    is safe because an unreaped child keeps its pid, and raises TimeoutError.
    """
    pidfd = os.pidfd_open(process.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        finished = bool(poller.poll(timeout * 1000))
        if not finished:
            process.kill()
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        os.close(pidfd)
    process.returncode = os.waitstatus_to_exitcode(status)
    if not finished:
        raise TimeoutError(f"timed out after {timeout:g} s and was killed")
    return process.returncode, usage


def run_once(command: Command, timeout: float) -> RunResult:
    """Run ``command`` once and measure its wall time and peak RSS.

    Output goes to temporary files rather than pipes, so the child never blocks
    on a full pipe while this process waits in wait4.
    """
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        try:
            process = subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        except OSError as exc:
            raise CommandFailed(
                f"{command.shell_line()}: failed to start: {exc}"
            ) from None
        try:
            exit_code, usage = wait_with_usage(process, timeout)
        except TimeoutError as exc:
            raise CommandFailed(f"{command.shell_line()}: {exc}") from None
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        result = RunResult(
            seconds=seconds,
            # Linux reports ru_maxrss in KiB.
            max_rss_kib=usage.ru_maxrss,
            exit_code=exit_code,
            stdout=stdout.read().decode(errors="replace"),
            stderr=stderr.read().decode(errors="replace"),
        )
    validate_result(command, result)
    return result


def validate_result(command: Command, result: RunResult) -> None:
    """Raise CommandFailed unless ``result`` is a normal finish of ``command``."""
    problem = None
    if result.exit_code < 0:
        problem = f"was killed by {signal.Signals(-result.exit_code).name}"
    elif result.exit_code not in command.accepted_exit_codes:
        accepted = " or ".join(
            str(code) for code in sorted(command.accepted_exit_codes)
        )
        problem = f"exited with {result.exit_code}, expected {accepted}"
    elif TRACEBACK_MARKER in result.stderr:
        problem = "printed a Python traceback"
    elif command.expects_json:
        try:
            json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            problem = f"printed output that is not valid JSON ({exc})"
    if problem is None:
        return
    stderr_tail = "\n".join(result.stderr.strip().splitlines()[-20:])
    message = f"{command.shell_line()}: {problem}"
    if stderr_tail:
        message += f"\nlast lines of stderr:\n{stderr_tail}"
    raise CommandFailed(message)


def require_executable(path: Path, install_hint: str) -> None:
    """Raise CommandFailed when ``path`` is not an executable file."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise CommandFailed(f"{path} not found or not executable; {install_hint}")


def build_venv(venv_dir: Path, *requirements: str) -> None:
    """Create a virtualenv at ``venv_dir`` and pip-install ``requirements`` in it."""
    steps = [
        [sys.executable, "-m", "venv", str(venv_dir)],
        [
            str(venv_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
    ]
    for argv in steps:
        print(f"+ {shlex.join(argv)}", file=sys.stderr)
        try:
            completed = subprocess.run(
                argv,
                check=False,
                capture_output=True,
                text=True,
                timeout=VENV_BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{shlex.join(argv)}: timed out") from None
        if completed.returncode != 0:
            raise CommandFailed(
                f"{shlex.join(argv)}: exited with {completed.returncode}\n"
                f"{completed.stderr.strip()}"
            )


def make_comparisons(
    venv_dir: Path, doctor_venv: Path, deployment_dir: Path
) -> list[Comparison]:
    """Build the version and check comparisons.

    Each tool runs from a virtualenv of its own, as a user installs it: the
    doctor from ``doctor_venv``, gunicorn from the deployment's ``venv_dir``.
    Neither pays for the other's packages at interpreter start-up.
    """
    doctor = doctor_venv / "bin" / "gunicorn-doctor"
    gunicorn = venv_dir / "bin" / "gunicorn"
    require_executable(
        doctor, f"install the doctor with '{doctor_venv}/bin/pip install {REPO_ROOT}'"
    )
    require_executable(
        gunicorn, f"install it with '{venv_dir}/bin/pip install gunicorn'"
    )
    version = Comparison(
        name="version",
        doctor=Command([str(doctor), "--version"]),
        baseline=Command([str(gunicorn), "--version"]),
        target=VERSION_TARGET,
    )
    check = Comparison(
        name="check",
        doctor=Command(
            [
                str(doctor),
                "check",
                "--chdir",
                str(deployment_dir),
                "--venv",
                str(venv_dir),
                "--format",
                "json",
            ],
            # 1 means the run finished and reported an error-level finding.
            accepted_exit_codes=frozenset({0, 1}),
            expects_json=True,
        ),
        baseline=Command(
            [
                str(venv_dir / "bin" / "gunicorn"),
                "--check-config",
                "-c",
                "gunicorn.conf.py",
                "app:app",
            ],
            cwd=deployment_dir,
        ),
        target=CHECK_TARGET,
    )
    return [version, check]


def measure(comparison: Comparison, runs: int, timeout: float) -> RunResult:
    """Time both commands of ``comparison`` after one warm-up run of each.

    The commands alternate, and the order flips every round, so drift in the
    machine's load hits both about equally. Returns the last doctor run.
    """
    run_once(comparison.doctor, timeout)
    run_once(comparison.baseline, timeout)
    last_doctor_run = None
    for round_index in range(runs):
        order = [
            (comparison.doctor, comparison.doctor_timings),
            (comparison.baseline, comparison.baseline_timings),
        ]
        if round_index % 2 == 1:
            order.reverse()
        for command, timings in order:
            result = run_once(command, timeout)
            timings.add(result)
            if command is comparison.doctor:
                last_doctor_run = result
    return last_doctor_run


def read_first_field(path: str, key: str) -> str | None:
    """Return the value of the first ``key: value`` line of a /proc file."""
    try:
        with open(path, encoding="utf-8") as proc_file:
            for line in proc_file:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def describe_machine(
    venv_dir: Path, doctor_venv: Path, timeout: float
) -> dict[str, str]:
    """Collect the facts about this machine and its tools that the page records."""
    mem_total = read_first_field("/proc/meminfo", "MemTotal")
    if mem_total is not None:
        ram = f"{int(mem_total.split()[0]) / 1024**2:.1f} GiB"
    else:
        ram = "unknown"
    cpu_model = read_first_field("/proc/cpuinfo", "model name") or "unknown"
    venv_python = query_output(
        [
            str(venv_dir / "bin" / "python"),
            "-c",
            "import platform; print(platform.python_version())",
        ],
        timeout,
    )
    return {
        "cores": str(os.cpu_count()),
        "ram": ram,
        "cpu": cpu_model,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_version()} ({sys.executable})",
        "venv_python": venv_python,
        "gunicorn": query_output(
            [sys.executable, "-c", GUNICORN_VERSION_CODE], timeout
        ),
        "venv_gunicorn": query_output(
            [str(venv_dir / "bin" / "python"), "-c", GUNICORN_VERSION_CODE], timeout
        ),
        "doctor": query_output(
            [str(doctor_venv / "bin" / "gunicorn-doctor"), "--version"], timeout
        )
        or "gunicorn-doctor version unknown",
        "commit": describe_commit(timeout),
    }


def describe_commit(timeout: float) -> str:
    """Return the HEAD commit and whether the work tree has uncommitted changes."""
    git = ["git", "-C", str(REPO_ROOT)]
    commit = query_output([*git, "rev-parse", "HEAD"], timeout)
    if not commit:
        return "none (no git commit found)"
    # GIT_OPTIONAL_LOCKS=0 stops git status from rewriting the index.
    changes = query_output(
        [*git, "status", "--porcelain"],
        timeout,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    if changes:
        return f"{commit}, with uncommitted changes or untracked files"
    return commit


def query_output(
    argv: list[str], timeout: float, env: dict[str, str] | None = None
) -> str:
    """Return the first line ``argv`` prints, or an empty string if it fails."""
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=True, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = completed.stdout.strip().splitlines()
    return lines[0] if lines else ""


def format_table(comparisons: list[Comparison]) -> list[list[str]]:
    """Return the result rows, header first, shared by the terminal and the page."""
    rows = [
        [
            "comparison",
            "doctor median ms",
            "gunicorn median ms",
            "ratio",
            "target",
            "result",
            "doctor peak RSS MiB",
            "gunicorn peak RSS MiB",
        ]
    ]
    for comparison in comparisons:
        rows.append(
            [
                comparison.name,
                f"{comparison.doctor_timings.median_ms:.1f}",
                f"{comparison.baseline_timings.median_ms:.1f}",
                f"{comparison.ratio:.2f}",
                f"<= {comparison.target:.2f}",
                comparison.verdict,
                f"{comparison.doctor_timings.peak_rss_mib:.1f}",
                f"{comparison.baseline_timings.peak_rss_mib:.1f}",
            ]
        )
    return rows


def print_table(rows: list[list[str]]) -> None:
    """Print ``rows`` as aligned text columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def markdown_table(rows: list[list[str]]) -> list[str]:
    """Return ``rows`` as Markdown table lines, header first."""
    lines = ["| " + " | ".join(rows[0]) + " |"]
    lines.append("|" + "|".join(" --- " for _ in rows[0]) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows[1:])
    return lines


def describe_report(doctor_output: str) -> list[str]:
    """Summarize the doctor's JSON report as Markdown list items."""
    report = json.loads(doctor_output)
    if not isinstance(report, dict):
        return ["- The report is valid JSON but not an object."]
    summary = report.get("summary", {})
    counts = ", ".join(f"{count} {severity}" for severity, count in summary.items())
    lines = [f"- Exit code {report.get('exit_code')}, findings: {counts or 'none'}."]
    for finding in report.get("findings", []):
        if finding.get("severity") in ("warning", "error", "skipped"):
            lines.append(
                f"- {finding['severity']} `{finding.get('check')}`:"
                f" {finding.get('title')}"
            )
    for note in report.get("notes", []):
        lines.append(f"- Note: {note}")
    return lines


PAGE_HEADER = """\
# Benchmarks

How long `gunicorn-doctor` takes next to the `gunicorn` commands it is most
like, measured on one machine. Rerun and rewrite this page with

```
python3 bench/run_bench.py --write
```

## Method

- Each command runs once as a warm-up, then {runs} times timed. The doctor and
  gunicorn commands alternate and swap order every round.
- Wall time is `time.perf_counter()` from starting the subprocess to reaping it.
- The ratio is the doctor's median over gunicorn's median. A ratio above the
  target is recorded as MISS, and the script does not fail on it.
- Peak RSS is the largest `ru_maxrss` that `os.wait4` reported over the timed
  runs. On Linux (checked on 6.18) that is the largest resident set of the
  command or of any descendant it waited for, not a sum over processes.
- Each tool runs from a virtualenv of its own, as a user installs it: the
  doctor from one built with `pip install` of this checkout, gunicorn from one
  built from `fixtures/healthy/requirements.txt`. The check comparison runs on
  a temporary copy of `fixtures/healthy`; no gunicorn is running, so the
  doctor also probes the bind and reads the logs it would read on a server.

## Where the check's time goes

`gunicorn --check-config` starts one Python, loads the config and imports
the app. `gunicorn-doctor check` does the same work in a child process under
the deployment's own interpreter (the settings probe), so one
`--check-config` is its floor. What it adds on top:

- Its own start before the probe. `check` reads the target's options from
  `sys.argv`, runs the discovery and starts the probe before it imports
  typer (`doctor/headstart.py`), about 35 ms after the process starts.
- The probe's own extra work: loading the worker class and listing the
  venv's packages. It compiles nothing when the target's Python has the
  doctor's magic number, because the runner sends the code pip compiled
  into the doctor's `__pycache__`.
- The work that needs the settings, after the probe ends: about 20 ms of
  checks and the report. Everything else (processes, sockets, nginx's
  files, requirements, logrotate) is gathered while the probe runs.
- Competition for the CPU. The doctor's own work (importing typer, the
  checks and their facts, reading `/proc` and nginx's files) takes about
  200 ms of CPU time and runs while the probe does. On a machine with two
  cores the two processes slow each other down, so the ratio moves with the
  machine's load from run to run. Python 3.11 takes 0.5 to 0.8 ms to create
  a dataclass, so the immutable records are NamedTuples, which cost about
  a tenth of that.

## Latest run

- Date: {date}
- Commit: {commit}
- Machine: {cores} cores (`os.cpu_count()`), {ram} RAM, CPU {cpu}, {os}
- Python: {python}, benchmark venv Python {venv_python}
- {doctor}
- gunicorn: {gunicorn} for `--version`, {venv_gunicorn} in the benchmark venv

Commands, as run (the temporary directories differ on every run):

```
{commands}
```
"""


def render_page(
    machine: dict[str, str],
    runs: int,
    commands: list[Command],
    comparisons: list[Comparison],
    doctor_output: str | None,
    failure: str | None,
) -> str:
    """Render the benchmark page from one run's results or its failure."""
    facts = {key: value or "unknown" for key, value in machine.items()}
    header = PAGE_HEADER.format(
        runs=runs,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commands="\n".join(command.shell_line() for command in commands),
        **facts,
    )
    lines = [header]
    if failure is not None:
        lines += [
            "## Result: FAILED",
            "",
            "A command did not finish normally, so the run stopped without results:",
            "",
            "```",
            failure,
            "```",
            "",
        ]
        return "\n".join(lines)
    lines += ["## Results", ""]
    lines += markdown_table(format_table(comparisons))
    lines += ["", "What the last timed `check` run reported:", ""]
    lines += describe_report(doctor_output)
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace, work_dir: Path) -> int:
    """Set up the venv and fixture copy, run the comparisons and report them."""
    if args.venv is not None:
        venv_dir = args.venv
    else:
        venv_dir = work_dir / "venv"
        build_venv(venv_dir, "-r", str(FIXTURE_DIR / "requirements.txt"))
    if args.doctor_venv is not None:
        doctor_venv = args.doctor_venv
    else:
        doctor_venv = work_dir / "doctor-venv"
        build_venv(doctor_venv, str(REPO_ROOT))
    deployment_dir = work_dir / "healthy"
    shutil.copytree(
        FIXTURE_DIR, deployment_dir, ignore=shutil.ignore_patterns("__pycache__")
    )

    comparisons = make_comparisons(venv_dir, doctor_venv, deployment_dir)
    commands = [
        c
        for comparison in comparisons
        for c in (comparison.doctor, comparison.baseline)
    ]
    failure = None
    doctor_output = None
    try:
        for comparison in comparisons:
            print(f"measuring {comparison.name} ({args.runs} runs)...", file=sys.stderr)
            last_doctor_run = measure(comparison, args.runs, args.timeout)
            doctor_output = last_doctor_run.stdout
    except CommandFailed as exc:
        failure = str(exc)

    if failure is None:
        print_table(format_table(comparisons))
    else:
        print(f"run_bench: error: {failure}", file=sys.stderr)
    if args.write:
        machine = describe_machine(venv_dir, doctor_venv, args.timeout)
        page = render_page(
            machine, args.runs, commands, comparisons, doctor_output, failure
        )
        DOCS_PAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_PAGE.write_text(page, encoding="utf-8")
        print(f"wrote {DOCS_PAGE}", file=sys.stderr)
    return 1 if failure is not None else 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and return the process exit status."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="doctor-bench-") as work_dir:
        try:
            return run(args, Path(work_dir))
        except CommandFailed as exc:
            print(f"run_bench: error: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
