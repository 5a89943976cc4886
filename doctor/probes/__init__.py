"""Run probe scripts under a deployment's own Python interpreter.

Loading a Gunicorn config file or importing the app executes user code, so the
doctor never does either in its own process. ``run_probe`` starts one of the
standalone scripts in this package (``settings_probe.py``, ``import_probe.py``
or ``venv_probe.py``) with the target interpreter. The script runs in the
service's working directory and environment, optionally as the service user,
with a timeout and a cap on captured output. ``run_probe`` parses the single
JSON line that the script prints.
"""

from __future__ import annotations

import atexit
import errno
import functools
import importlib.util
import json
import marshal
import os
import pwd
import selectors
import signal
import struct
import subprocess
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

PROBE_NAMES = ("settings", "import", "venv")
READ_CHUNK = 65536
# Seconds to keep reading pipes after the probe exited, in case a process it
# started outside its process group still keeps them open.
DRAIN_SECONDS = 1.0
POLL_SECONDS = 0.05
# Exit status of the bootstrap when it cannot enter the working directory. It
# is the status systemd uses for the same failure (EXIT_CHDIR).
CHDIR_EXIT_STATUS = 200
CHDIR_MARKER = "gunicorn-doctor: cannot enter the working directory:"
# The helpers the probe scripts share travel with them as this module, so
# that the service user needs no read access to the doctor's install. A probe
# can also take other probes along as modules named MODULE_PREFIX + name.
COMMON_MODULE = "gunicorn_doctor_probe_common"
MODULE_PREFIX = "gunicorn_doctor_probe_"
BOOTSTRAP = f"""\
import os, sys, types
_directory, _names, _code_fd = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
_sources = sys.argv[4 : 4 + len(_names)]
_source = sys.argv[4 + len(_names)]
del sys.argv[1 : 5 + len(_names)]
if sys.path and sys.path[0] == "":
    sys.path[0] = os.path.dirname(os.path.abspath(sys.executable))
_codes = None
if _code_fd != "-":
    with os.fdopen(int(_code_fd), "rb") as _file:
        _blob = _file.read()
    try:
        import marshal
        from importlib.util import MAGIC_NUMBER
        if _blob.startswith(MAGIC_NUMBER):
            _codes = marshal.loads(_blob[len(MAGIC_NUMBER) :])
    except Exception:
        _codes = None
for _index, (_name, _module_source) in enumerate(zip(_names, _sources)):
    _module = types.ModuleType(_name)
    sys.modules[_name] = _module
    if _codes:
        _code = _codes[_index]
    else:
        _code = compile(_module_source, "<" + _name + ">", "exec")
    exec(_code, _module.__dict__)
try:
    os.chdir(_directory)
except OSError as _exc:
    sys.stderr.write("{CHDIR_MARKER} %s\\n" % (_exc.strerror,))
    sys.exit({CHDIR_EXIT_STATUS})
exec(_codes[-1] if _codes else compile(_source, "<probe>", "exec"))
"""

__all__ = ["PROBE_NAMES", "ProbeResult", "probe_script", "run_probe"]

# Probes started and not yet reaped. A probe runs in a process group of its
# own, so Ctrl-C in the terminal does not reach it, and the doctor kills
# what is left of them when it exits.
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def kill_running_probes() -> None:
    """Kill the process group of every probe still running."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        kill_group(process)


@dataclass
class ProbeResult:
    """Outcome of one probe run."""

    data: dict | None
    returncode: int | None
    stderr: str
    timed_out: bool
    error: str | None


def probe_script(name: str) -> Path:
    """Return the path of the script for probe ``name``."""
    if name not in PROBE_NAMES:
        raise ValueError(
            f"unknown probe {name!r}: expected one of {', '.join(PROBE_NAMES)}"
        )
    return Path(__file__).with_name(f"{name}_probe.py")


def run_probe(
    python: str,
    name: str,
    args: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    user: int | None = None,
    group: int | None = None,
    timeout: float = 20.0,
    output_cap: int = 1 << 20,
    with_probes: tuple[str, ...] = (),
    cancel: threading.Event | None = None,
) -> ProbeResult:
    """Run probe ``name`` with interpreter ``python`` and parse its JSON output.

    ``with_probes`` names other probes whose code is sent along, importable
    by the probe as ``gunicorn_doctor_probe_<name>``. Setting ``cancel``
    kills the probe; the result then reports it as cancelled.

    Expected failures are returned as a sentence in ``ProbeResult.error``: a
    missing or unusable interpreter, a working directory the user cannot
    enter, a timeout, too much output or output that is not JSON. Only an
    unknown ``name`` raises ValueError. Every process left in the probe's
    process group is killed before this returns.
    """
    script = probe_script(name)
    label = f"the {name} probe run by {python}"
    problem = check_interpreter(python)
    if problem:
        return failed(problem)
    if not os.path.isdir(cwd):
        return failed(f"the working directory {cwd} does not exist")

    # The bootstrap is passed with -c and receives the working directory, the
    # descriptor of the compiled code and the probe's source as arguments. Running a script by path would put
    # this package's directory first on sys.path, where it could shadow user
    # modules. With -c, sys.path[0] is "", the working directory, and the
    # bootstrap replaces it with the interpreter's directory, as
    # VENV/bin/gunicorn has, before anything is imported from the working
    # directory: a local types.py must not break the probe. No -I/-E/-s either,
    # because PYTHONPATH and site settings from the service environment apply
    # to gunicorn too. The child changes directory itself, after Popen has
    # switched users, so a directory the service user cannot enter fails as
    # it does under systemd; Popen's own cwd= would chdir while still root.
    modules = {COMMON_MODULE: script.with_name(f"{COMMON_MODULE}.py")}
    for extra in with_probes:
        modules[MODULE_PREFIX + extra] = probe_script(extra)
    sources = [path.read_text(encoding="utf-8") for path in modules.values()]
    source = script.read_text(encoding="utf-8")
    code_fd = compiled_code_file(tuple(modules.items()) + (("", script),))
    command = [python, "-c", BOOTSTRAP, cwd, ",".join(modules)]
    command += [str(code_fd) if code_fd is not None else "-", *sources, source]
    command += args
    try:
        process = subprocess.Popen(
            command,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
            close_fds=True,
            pass_fds=() if code_fd is None else (code_fd,),
            **privilege_kwargs(user, group),
        )
    except OSError as exc:
        return failed(describe_start_error(exc, python, user))
    except (subprocess.SubprocessError, ValueError) as exc:
        return failed(f"cannot start the interpreter {python}: {exc}")
    finally:
        if code_fd is not None:
            os.close(code_fd)

    with _RUNNING_LOCK:
        _RUNNING.add(process)
    try:
        capture = capture_output(process, timeout, output_cap, cancel)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(process)
    stderr = capture.stderr_text()
    if capture.cancelled:
        return ProbeResult(
            None, process.returncode, stderr, False, f"{label} was cancelled"
        )
    if capture.timed_out:
        return ProbeResult(
            None,
            process.returncode,
            stderr,
            True,
            f"{label} timed out after {timeout:g} s",
        )
    if capture.stdout_overflow:
        return ProbeResult(
            None,
            process.returncode,
            stderr,
            False,
            f"{label} output exceeded {format_size(output_cap)}",
        )
    data, parse_error = parse_output(bytes(capture.stdout))
    error = None
    chdir_failed = process.returncode == CHDIR_EXIT_STATUS and CHDIR_MARKER in stderr
    if data is None and chdir_failed:
        error = describe_chdir_error(stderr, cwd, user)
    elif data is None:
        error = f"{label} {parse_error} (exit status {process.returncode})"
    return ProbeResult(data, process.returncode, stderr, False, error)


def compiled_code_file(scripts: tuple[tuple[str, Path], ...]) -> int | None:
    """Return the descriptor of a memory file with the scripts' code, or None.

    Compiling the probe scripts takes the target's interpreter about 10 ms
    of every probe. The doctor's own install has them compiled already, in
    its ``__pycache__``, so the bootstrap gets that code, behind this
    interpreter's MAGIC_NUMBER, and compiles the sources only when its own
    magic number differs. ``scripts`` pairs module names with paths; the
    empty name is the probe itself. None means no valid cache, or no memfd.
    """
    blob = _compiled_code(scripts)
    if blob is None or not hasattr(os, "memfd_create"):
        return None
    descriptor = os.memfd_create("gunicorn-doctor-probe", os.MFD_CLOEXEC)
    view = memoryview(blob)
    while view:
        view = view[os.write(descriptor, view) :]
    os.lseek(descriptor, 0, os.SEEK_SET)
    return descriptor


def _compiled_code(scripts: tuple[tuple[str, Path], ...]) -> bytes | None:
    try:
        versions = tuple(
            (module, path, path.stat().st_mtime_ns, path.stat().st_size)
            for module, path in scripts
        )
    except OSError:
        return None
    return _compiled_code_of(versions)


@functools.cache
def _compiled_code_of(
    versions: tuple[tuple[str, Path, int, int], ...],
) -> bytes | None:
    """Build the blob once per version of the scripts, keyed by their stat."""
    codes = []
    for module, path, _, _ in versions:
        code = _cached_code(path)
        if code is None:
            return None
        # The bootstrap names them so when it compiles the sources, and the
        # probes recognize their own frames in tracebacks by these names.
        codes.append(_renamed(code, f"<{module}>" if module else "<probe>"))
    return importlib.util.MAGIC_NUMBER + marshal.dumps(tuple(codes))


def _cached_code(path: Path):
    """Load the code of ``path`` from its ``__pycache__`` file, if still valid."""
    try:
        cached = Path(importlib.util.cache_from_source(str(path))).read_bytes()
        source = path.stat()
    except (OSError, NotImplementedError, ValueError):
        return None
    magic = importlib.util.MAGIC_NUMBER
    header = len(magic) + 12
    if len(cached) < header or not cached.startswith(magic):
        return None
    flags, mtime, size = struct.unpack("<3I", cached[len(magic) : header])
    # Only a timestamp-based file (flags 0, as pip writes them) can be
    # checked against the source without hashing it.
    if flags != 0 or mtime != int(source.st_mtime) & 0xFFFFFFFF:
        return None
    if size != source.st_size & 0xFFFFFFFF:
        return None
    try:
        return marshal.loads(cached[header:])
    except (EOFError, ValueError, TypeError):
        return None


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    constants = tuple(
        _renamed(item, filename) if isinstance(item, types.CodeType) else item
        for item in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=constants)


def failed(message: str) -> ProbeResult:
    return ProbeResult(None, None, "", False, message)


def check_interpreter(python: str) -> str | None:
    """Describe why ``python`` cannot be started, or return None."""
    path = Path(python)
    if not path.is_absolute():
        return f"the interpreter path {python} is not absolute"
    if not os.path.lexists(path):
        return f"the interpreter {python} does not exist"
    if path.is_symlink() and not path.exists():
        target = os.path.realpath(path)
        return f"the interpreter {python} is a dangling symlink to {target}"
    if path.is_dir():
        return f"the interpreter {python} is a directory"
    return None


def privilege_kwargs(user: int | None, group: int | None) -> dict:
    """Build Popen arguments that switch to ``user``/``group`` like systemd does.

    With a user, the supplementary groups become that user's groups from the
    group database (systemd calls initgroups for ``User=``), so root's groups
    do not leak into the probe. Requesting the current user and group changes
    nothing, which lets the doctor run unprivileged against its own services.
    """
    same_user = user is None or user == os.geteuid()
    same_group = group is None or group == os.getegid()
    if same_user and same_group:
        return {}
    kwargs: dict = {}
    if group is None and user is not None:
        try:
            group = pwd.getpwuid(user).pw_gid
        except KeyError:
            # A uid without a passwd entry, such as a systemd DynamicUser, has
            # a group of the same number. Keeping root's group would be wrong.
            group = user
    if group is not None:
        kwargs["group"] = group
    if user is not None:
        kwargs["user"] = user
        kwargs["extra_groups"] = supplementary_groups(user, kwargs["group"])
    return kwargs


def supplementary_groups(user: int, group: int) -> list[int]:
    try:
        name = pwd.getpwuid(user).pw_name
    except KeyError:
        return []
    try:
        return sorted(set(os.getgrouplist(name, group)))
    except OSError:
        return []


def describe_user(user: int | None) -> str:
    if user is None:
        return "the doctor's user"
    try:
        return f"user {pwd.getpwuid(user).pw_name} (uid {user})"
    except KeyError:
        return f"uid {user}"


def describe_start_error(exc: OSError, python: str, user: int | None) -> str:
    """Turn a Popen failure into a sentence naming the file and the fix."""
    user_label = describe_user(user)
    if exc.errno == errno.ENOENT and os.path.exists(python):
        return (
            f"the interpreter {python} exists but cannot be started: the program "
            "loader or the #! interpreter it names is missing"
        )
    if exc.errno == errno.ENOENT:
        return f"the interpreter {python} does not exist"
    if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is None:
        # Popen raises PermissionError without a filename when setuid or
        # setgid fails, that is, when the doctor is not root.
        return f"cannot switch to {user_label} to run {python}: {exc.strerror}"
    if exc.errno == errno.EACCES:
        return (
            f"the interpreter {python} cannot be executed by {user_label}: permission "
            "denied; check the execute bits on it and the directories above it"
        )
    if exc.errno == errno.ENOEXEC:
        return (
            f"the interpreter {python} cannot be executed: exec format error "
            "(not a program for this machine)"
        )
    return f"cannot start the interpreter {python}: {exc.strerror or exc}"


def describe_chdir_error(stderr: str, cwd: str, user: int | None) -> str:
    """Describe the bootstrap's failure to enter ``cwd`` from its stderr line."""
    reason = "unknown error"
    for line in stderr.splitlines():
        if line.startswith(CHDIR_MARKER):
            reason = line[len(CHDIR_MARKER) :].strip()
    message = f"{describe_user(user)} cannot enter the working directory {cwd}: "
    message += reason.lower()
    if "permission" in reason.lower():
        message += "; grant it execute permission on the directory and its parents"
    return message


class Capture:
    """Bounded stdout and stderr of a probe process."""

    def __init__(self, output_cap: int):
        self.cap = output_cap
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stderr_dropped = 0
        self.stdout_overflow = False
        self.timed_out = False
        self.cancelled = False

    def add_stderr(self, chunk: bytes) -> None:
        # Keep the tail because tracebacks and the last messages come at the end.
        self.stderr += chunk
        excess = len(self.stderr) - self.cap
        if excess > 0:
            del self.stderr[:excess]
            self.stderr_dropped += excess

    def stderr_text(self) -> str:
        text = self.stderr.decode("utf-8", errors="replace")
        if self.stderr_dropped:
            text = f"[{self.stderr_dropped} earlier bytes dropped]\n" + text
        return text


def capture_output(
    process: subprocess.Popen,
    timeout: float,
    output_cap: int,
    cancel: threading.Event | None = None,
) -> Capture:
    """Read the probe's pipes until it exits, the deadline passes or stdout overflows.

    Setting ``cancel`` ends the reading too, within ``POLL_SECONDS``.

    On every path the probe's process group is killed and the probe reaped.
    """
    capture = Capture(output_cap)
    deadline = time.monotonic() + timeout
    drain_deadline = None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                capture.timed_out = True
                break
            if cancel is not None and cancel.is_set():
                capture.cancelled = True
                break
            if drain_deadline is not None and now >= drain_deadline:
                break
            for key, _ in selector.select(min(POLL_SECONDS, deadline - now)):
                chunk = os.read(key.fd, READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.data == "stdout":
                    capture.stdout += chunk
                else:
                    capture.add_stderr(chunk)
            if len(capture.stdout) > output_cap:
                capture.stdout_overflow = True
                break
            if drain_deadline is None and has_exited(process):
                # The probe is done, so anything still in its group is a stray.
                kill_group(process)
                drain_deadline = time.monotonic() + DRAIN_SECONDS
    finally:
        selector.close()
        kill_group(process)
        process.stdout.close()
        process.stderr.close()
        process.wait()
    return capture


def has_exited(process: subprocess.Popen) -> bool:
    """Tell whether the probe exited, without reaping it.

    An unreaped zombie keeps its PID, so the process group ID stays valid for
    ``kill_group`` until ``process.wait()``.
    """
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def kill_group(process: subprocess.Popen) -> None:
    """Send SIGKILL to every process in the probe's process group.

    The probe is its own group leader (process_group=0), so its PID is the
    group ID. The leader is not reaped yet, so the ID cannot have been reused.
    """
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def parse_output(stdout: bytes) -> tuple[dict | None, str | None]:
    """Parse the last non-empty stdout line as a JSON object.

    Earlier lines can come from code that ran before the probe redirected
    stdout, such as a ``.pth`` file printing at interpreter start.
    """
    text = stdout.decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None, "printed no JSON"
    try:
        data = json.loads(lines[-1])
    except ValueError as exc:
        return None, f"printed output that is not JSON ({exc})"
    if not isinstance(data, dict):
        return None, "printed JSON that is not an object"
    return data, None


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
