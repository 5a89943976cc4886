"""Target discovery: which deployment to examine, and where each value came from.

Values come, in order of precedence, from explicit options, from a systemd
unit (``--unit``, or the one gunicorn unit found under the root), and from
the deployment directory itself (``gunicorn.conf.py``, ``app.py``, ``venv/``).
"""

from __future__ import annotations

import ast
import glob
import os
import posixpath
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from doctor.rootfs import RootFS
from doctor.static_settings import ArgvError, parse_argv, replace_app

UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
# systemd's PATH for services when the unit sets none (systemd.exec(5)).
SYSTEMD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
CONFIG_NAMES = ("gunicorn.conf.py", "gunicorn_config.py")
APP_FILES = ("app.py", "wsgi.py", "main.py")
WSGI_NAMES = ("app", "application")


class DiscoveryError(Exception):
    """The target cannot be examined at all; the CLI exits with code 2."""


class Sourced(NamedTuple):
    value: str
    source: str


@dataclass
class DiscoveryOptions:
    app: str | None = None
    chdir: str | None = None
    config: str | None = None
    venv: str | None = None
    unit: str | None = None
    root: str | None = None
    pid: int | None = None
    nginx: str | None = None
    cwd: str = field(default_factory=os.getcwd)


@dataclass
class Target:
    fs: RootFS
    chdir: Sourced | None = None
    app: Sourced | None = None
    config: Sourced | None = None
    venv: Sourced | None = None
    unit: Sourced | None = None
    user: Sourced | None = None
    group: Sourced | None = None
    launcher: Sourced | None = None
    argv: list[str] = field(default_factory=list)
    argv_source: str = "synthesized from the discovered files"
    environment: dict[str, str] = field(default_factory=dict)
    environment_source: str = "the doctor's own environment"
    service: object | None = None
    notes: list[str] = field(default_factory=list)
    pid: int | None = None
    master_argv: list[str] | None = None
    nginx: Sourced | None = None

    master_source: str = ""

    @property
    def chdir_host(self) -> Path | None:
        return self.fs.host(self.chdir.value) if self.chdir else None

    def header(self) -> list[tuple[str, str, str]]:
        """Return (label, value, source) rows for the report header."""
        rows = []
        if not self.fs.is_live:
            rows.append(("root", str(self.fs.root), "--root option"))
        if self.pid is not None:
            rows.append(("master", f"pid {self.pid}", self.master_source))
        for label in ("unit", "chdir", "app", "config", "venv", "launcher", "user"):
            value = getattr(self, label)
            if value is not None:
                rows.append((label, value.value, value.source))
        if self.argv:
            rows.append(("argv", shlex.join(self.argv), self.argv_source))
        return rows

    def to_dict(self) -> dict:
        data: dict = {"root": str(self.fs.root)}
        for label in (
            "unit",
            "chdir",
            "app",
            "config",
            "venv",
            "launcher",
            "user",
            "group",
        ):
            value = getattr(self, label)
            data[label] = (
                {"value": value.value, "source": value.source} if value else None
            )
        data["argv"] = list(self.argv)
        data["pid"] = self.pid
        data["notes"] = list(self.notes)
        return data


class SeveralMasters(DiscoveryError):
    """More than one gunicorn master runs and none was chosen."""

    def __init__(self, masters):
        self.masters = masters
        rows = "\n".join(f"  {m.process.row()}" for m in masters)
        super().__init__(
            f"{len(masters)} gunicorn masters are running; choose one with --pid,"
            f" or examine each with --all:\n{rows}"
        )


def discover(options: DiscoveryOptions) -> Target:
    """Build the Target from options, a running master, a unit and the directory."""
    fs = _root(options.root)
    target = Target(fs=fs)
    _apply_explicit(target, options)

    explicit_deployment = options.app or options.chdir or options.config
    in_deployment = fs.is_live and _looks_like_deployment(Path(options.cwd))
    master = _find_master(fs, options, explicit_deployment or in_deployment)
    unit_path = options.unit
    unit_how = "--unit option"
    if master is not None:
        chosen_by = (
            "--pid option" if options.pid else "the only gunicorn master running"
        )
        _apply_master(target, master, chosen_by)
        if unit_path is None:
            unit_path = _unit_file_of(fs, master.pid)
            unit_how = f"systemd unit of pid {master.pid} (from its cgroup)"
    elif unit_path is None and not explicit_deployment and not in_deployment:
        unit_path = _find_gunicorn_unit(fs)
        unit_how = "the only gunicorn unit under the root"
    if unit_path:
        _apply_unit(target, unit_path, unit_how)
    if master is not None and not target.argv:
        target.argv = list(target.master_argv or [])
        target.argv_source = f"command line of running master pid {master.pid}"

    if target.chdir is None:
        if not fs.is_live:
            raise DiscoveryError(
                f"no deployment found under the root {fs.root}: no systemd unit"
                " runs gunicorn there; name the unit with --unit or the"
                " directory with --chdir"
            )
        target.chdir = Sourced(options.cwd, "current directory")
    _scan_directory(target)
    _build_argv(target, options)
    return target


def discover_all(options: DiscoveryOptions) -> list[Target]:
    """Build one Target per running gunicorn master on this host."""
    from doctor.facts.processes import scan_masters

    if options.root is not None:
        raise DiscoveryError(
            "--all examines this host's running masters; it cannot be combined"
            " with --root"
        )
    masters = scan_masters()
    if not masters:
        raise DiscoveryError("--all: no gunicorn master is running on this host")
    return [discover(replace(options, pid=m.pid)) for m in masters]


def _find_master(fs: RootFS, options: DiscoveryOptions, has_deployment: bool):
    """Return the master to examine: the one --pid names, or the only one running."""
    if options.pid is None and (has_deployment or options.unit or not fs.is_live):
        return None
    if options.pid is not None and not fs.is_live:
        raise DiscoveryError(
            "--pid names a process on this host; it cannot be combined with --root"
        )
    from doctor.facts.processes import scan_masters

    masters = scan_masters()
    if options.pid is not None:
        for master in masters:
            if master.pid == options.pid:
                return master
        known = ", ".join(str(m.pid) for m in masters) or "none"
        raise DiscoveryError(
            f"--pid {options.pid}: no gunicorn master has that pid (running"
            f" masters: {known}); pass the master's pid, the parent of the workers"
        )
    if len(masters) > 1:
        raise SeveralMasters(masters)
    return masters[0] if masters else None


def _apply_master(target: Target, master, chosen_by: str) -> None:
    from doctor.facts.processes import process_environment

    how = f"running master pid {master.pid}"
    target.pid = master.pid
    target.master_source = chosen_by
    target.master_argv = master.argv
    if target.chdir is None and master.process.cwd:
        target.chdir = Sourced(master.process.cwd, f"working directory of {how}")
    if target.venv is None and master.venv:
        target.venv = Sourced(master.venv, f"program of {how}")
    if master.program:
        target.launcher = Sourced(master.program, f"command line of {how}")
    if target.user is None and master.process.user:
        target.user = Sourced(master.process.user, f"user of {how}")
    environment = process_environment(master.pid)
    if environment is not None:
        target.environment = environment
        target.environment_source = f"environment of {how}"


def _unit_file_of(fs: RootFS, pid: int) -> str | None:
    from doctor.facts.processes import systemd_unit_of

    name = systemd_unit_of(pid)
    if name is None:
        return None
    for unit_dir in UNIT_DIRS:
        candidate = posixpath.join(unit_dir, name)
        if fs.host(candidate).exists():
            return candidate
    return None


def _root(root: str | None) -> RootFS:
    if root is None:
        return RootFS("/")
    path = Path(root)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "no such directory"
        raise DiscoveryError(
            f"--root {root}: {what}; pass the top of an unpacked"
            " filesystem tree (the directory that contains etc/)"
        )
    return RootFS(path)


def _apply_explicit(target: Target, options: DiscoveryOptions) -> None:
    fs = target.fs
    if options.chdir:
        chdir = options.chdir
        if fs.is_live:
            chdir = os.path.abspath(os.path.join(options.cwd, chdir))
        if not fs.host(chdir).is_dir():
            what = (
                "is not a directory" if fs.host(chdir).exists() else "no such directory"
            )
            raise DiscoveryError(
                f"--chdir {options.chdir}: {what}; pass the directory"
                " gunicorn runs in (the unit's WorkingDirectory)"
            )
        target.chdir = Sourced(chdir, "--chdir option")
    if options.app:
        if options.app.startswith("-"):
            # gunicorn would read it as an option, not as the app.
            raise DiscoveryError(
                f"APP {options.app!r} starts with '-', so gunicorn would take it"
                " for an option; give the app as MODULE:VARIABLE, e.g. app:app"
            )
        target.app = Sourced(options.app, "APP argument")
    if options.config:
        target.config = Sourced(options.config, "--config option")
    if options.nginx:
        nginx = options.nginx
        if fs.is_live:
            nginx = os.path.abspath(os.path.join(options.cwd, nginx))
        if not fs.host(nginx).is_file():
            raise DiscoveryError(
                f"--nginx {options.nginx}: no such file; pass nginx's main config,"
                " e.g. /etc/nginx/nginx.conf"
            )
        target.nginx = Sourced(nginx, "--nginx option")
    if options.venv:
        venv = options.venv
        if fs.is_live:
            venv = os.path.abspath(os.path.join(options.cwd, venv))
        target.venv = Sourced(venv, "--venv option")


def _looks_like_deployment(directory: Path) -> bool:
    names = (*CONFIG_NAMES, *APP_FILES, "venv", ".venv")
    return any((directory / name).exists() for name in names)


def _find_gunicorn_unit(fs: RootFS) -> str | None:
    candidates = []
    for unit_dir in UNIT_DIRS:
        for host_path in sorted(glob.glob(str(fs.host(unit_dir) / "*.service"))):
            try:
                text = Path(host_path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if any(
                line.strip().startswith("ExecStart") and "gunicorn" in line
                for line in text.splitlines()
            ):
                candidates.append(fs.display(host_path))
    if len(candidates) > 1:
        raise DiscoveryError(
            "several systemd units run gunicorn: "
            + ", ".join(candidates)
            + "; choose one with --unit"
        )
    return candidates[0] if candidates else None


def _apply_unit(target: Target, unit_path: str, how: str) -> None:
    from doctor.unitfile import load_unit, parse_environment_file, service_spec

    fs = target.fs
    host_path = fs.host(unit_path)
    if host_path.is_dir() or (not host_path.exists() and not host_path.is_symlink()):
        what = "is a directory" if host_path.is_dir() else "no such file"
        raise DiscoveryError(
            f"--unit {unit_path}: {what}; pass the path of the service's"
            " unit file, e.g. /etc/systemd/system/myapp.service"
        )
    unit = load_unit(host_path, fs.display(host_path))
    spec = service_spec(unit)
    target.service = spec
    target.unit = Sourced(fs.display(host_path), how)
    if spec.working_directory and target.chdir is None:
        value = spec.working_directory.value.lstrip("-")
        if value and value != "~":
            target.chdir = Sourced(
                value, f"WorkingDirectory ({_where(spec.working_directory)})"
            )
    if spec.user:
        target.user = Sourced(spec.user.value, f"User ({_where(spec.user)})")
    if spec.group:
        target.group = Sourced(spec.group.value, f"Group ({_where(spec.group)})")

    environment = {
        "PATH": SYSTEMD_DEFAULT_PATH,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    user = fs.user(spec.user.value) if spec.user else None
    if user:
        environment.update(
            HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL=user.shell
        )
    environment.update(spec.environment)
    # systemd.exec(5): variables from EnvironmentFile= override Environment=.
    for path, optional, entry in spec.environment_files:
        try:
            text = fs.host(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            if not optional:
                target.notes.append(
                    f"EnvironmentFile {path} ({_where(entry)}) cannot be read:"
                    f" {exc.strerror}; systemd refuses to start the service"
                )
            continue
        values, _problems = parse_environment_file(text, path)
        environment.update(values)
    target.environment = environment
    target.environment_source = f"systemd unit {target.unit.value}"

    if spec.exec_start is None:
        target.notes.append(f"{target.unit.value} has no ExecStart")
        return
    argv = spec.exec_start.expand(environment)
    launcher, gunicorn_args = _split_launcher(argv)
    target.launcher = Sourced(launcher, f"ExecStart ({_where(spec.exec_start_entry)})")
    target.argv = gunicorn_args
    target.argv_source = f"ExecStart ({_where(spec.exec_start_entry)})"
    if target.venv is None:
        venv = _venv_of_launcher(fs, launcher) or _venv_on_path(fs, environment)
        if venv:
            target.venv = Sourced(venv, f"ExecStart launcher {launcher}")


def _where(entry) -> str:
    return f"{entry.path}:{entry.line}"


def _split_launcher(argv: list[str]) -> tuple[str, list[str]]:
    """Split ExecStart into the program systemd runs and gunicorn's own args."""
    if not argv:
        return "", []
    launcher = argv[0]
    for index, token in enumerate(argv):
        if posixpath.basename(token) == "gunicorn":
            return launcher, argv[index + 1 :]
        if token == "-m" and index + 1 < len(argv) and argv[index + 1] == "gunicorn":
            return launcher, argv[index + 2 :]
    return launcher, argv[1:]


def _venv_of_launcher(fs: RootFS, launcher: str) -> str | None:
    bin_dir = posixpath.dirname(launcher)
    if posixpath.basename(bin_dir) != "bin":
        return None
    venv = posixpath.dirname(bin_dir)
    if fs.host(posixpath.join(venv, "pyvenv.cfg")).exists():
        return venv
    return None


def _venv_on_path(fs: RootFS, environment: dict[str, str]) -> str | None:
    for entry in environment.get("PATH", "").split(":"):
        if posixpath.basename(entry) == "bin":
            venv = posixpath.dirname(entry)
            if fs.host(posixpath.join(venv, "pyvenv.cfg")).exists():
                return venv
    return None


def _scan_directory(target: Target) -> None:
    fs = target.fs
    directory = target.chdir.value
    host_dir = fs.host(directory)
    if target.venv is None:
        for name in ("venv", ".venv"):
            candidate = posixpath.join(directory, name)
            host = fs.host(candidate)
            if (host / "pyvenv.cfg").exists() or (host / "bin").is_dir():
                target.venv = Sourced(candidate, f"{name}/ in the deployment directory")
                break
    if target.config is None and not target.argv:
        for name in CONFIG_NAMES:
            if (host_dir / name).is_file():
                note = "deployment directory"
                if name != "gunicorn.conf.py":
                    note += f"; gunicorn reads {name} only when passed with -c"
                target.config = Sourced(name, note)
                break
    if target.app is None and not target.argv:
        found = _find_wsgi_app(host_dir)
        if found:
            target.app = Sourced(found[0], f"WSGI callable in {found[1]}")


def _find_wsgi_app(directory: Path) -> tuple[str, str] | None:
    for filename in APP_FILES:
        path = directory / filename
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        module = filename[:-3]
        assigned = set()
        factories = set()
        for node in tree.body:
            if isinstance(node, ast.Assign):
                assigned.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.FunctionDef):
                factories.add(node.name)
        for name in WSGI_NAMES:
            # A plain ``def application(environ, start_response)`` is a WSGI
            # callable too, unlike a factory such as create_app.
            if name in assigned or name in factories:
                return f"{module}:{name}", filename
        if "create_app" in factories:
            return f"{module}:create_app()", filename
    return None


def _build_argv(target: Target, options: DiscoveryOptions) -> None:
    """Assemble gunicorn's argv, with explicit options taking precedence."""
    argv = list(target.argv)
    if argv:
        try:
            parsed = parse_argv(argv)
        except ArgvError as exc:
            target.notes.append(f"cannot read the gunicorn arguments statically: {exc}")
            parsed = None
        if options.config:
            argv += ["-c", options.config]
        elif parsed and "config" in parsed.values and target.config is None:
            target.config = Sourced(parsed.values["config"], target.argv_source)
        if options.app:
            try:
                argv = replace_app(argv, options.app)
            except ArgvError:
                argv.append(options.app)
        elif parsed and parsed.positional and target.app is None:
            target.app = Sourced(parsed.positional[0], target.argv_source)
        target.argv = argv
        if options.config or options.app:
            target.argv_source += ", with explicit options applied"
        return
    if target.config is not None:
        argv += ["-c", target.config.value]
    if target.app is not None:
        argv.append(target.app.value)
    target.argv = argv
    target.argv_source = "synthesized from the discovered files"
