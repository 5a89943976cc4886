"""The target's virtualenv: interpreter, gunicorn, installed packages."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from doctor.context import Context, FactUnavailable, fact
from doctor.probes.gunicorn_doctor_probe_common import (
    canonical_name,
    read_metadata_headers,
)

INTERPRETER_NAMES = ("python", "python3")


@dataclass
class VenvInfo:
    path: str
    host_path: Path
    exists: bool
    is_venv: bool
    interpreter: str | None = None
    interpreter_host: Path | None = None
    interpreter_problem: str | None = None
    pyvenv_cfg: dict[str, str] = field(default_factory=dict)
    probe: dict | None = None
    probe_error: str | None = None

    @property
    def runnable(self) -> bool:
        return self.interpreter_host is not None and self.interpreter_problem is None

    @cached_property
    def static_packages(self) -> dict[str, str]:
        """Installed distributions read from their metadata files on disk."""
        return read_dist_info(self.host_path) if self.exists else {}

    @property
    def gunicorn_version(self) -> str | None:
        if self.probe is not None:
            return self.probe.get("gunicorn_version")
        return self.static_packages.get("gunicorn")

    @property
    def packages(self) -> dict[str, str]:
        if self.probe is not None:
            return self.probe.get("packages") or {}
        return self.static_packages

    @property
    def packages_source(self) -> str:
        """Where the package list was read: by running Python, or from disk."""
        if self.probe is not None:
            return f"the package metadata on the sys.path of {self.interpreter}"
        return f"the *.dist-info directories under {self.path}/lib (not executed)"

    @property
    def python_version(self) -> str | None:
        return (self.probe or {}).get("python") or self.pyvenv_cfg.get("version")


@fact("venv_layout")
def venv_layout(ctx: Context) -> VenvInfo:
    """Return what the venv's files show, without running its interpreter."""
    target = ctx.target
    if target.venv is None:
        raise FactUnavailable(
            f"no virtualenv found for the deployment in {target.chdir.value}"
            " (no venv/ or .venv/, and the launcher is not inside one);"
            " name it with --venv"
        )
    fs = ctx.fs
    path = target.venv.value
    host = fs.host(path)
    info = VenvInfo(
        path=path,
        host_path=host,
        exists=host.is_dir(),
        is_venv=(host / "pyvenv.cfg").is_file(),
    )
    if not info.exists:
        return info
    info.pyvenv_cfg = _read_pyvenv_cfg(host / "pyvenv.cfg")
    _locate_interpreter(ctx, info)
    return info


@fact("venv")
def venv(ctx: Context) -> VenvInfo:
    """Return the venv's layout plus what its interpreter reports when run."""
    info = replace(ctx.fact("venv_layout"))
    if not info.exists or not info.runnable or ctx.static:
        return info
    # The settings probe reports the interpreter too; a separate venv probe
    # runs only when that one could not start.
    from doctor.facts.settings import settings_probe

    interpreter = (settings_probe(ctx).result.data or {}).get("interpreter")
    if interpreter and interpreter.get("python"):
        info.probe = interpreter
    else:
        _probe(ctx, info)
    return info


def _read_pyvenv_cfg(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def read_dist_info(venv_host: Path) -> dict[str, str]:
    """Read installed distributions from metadata files, without running Python."""
    packages = {}
    patterns = (
        "lib/python*/site-packages/*.dist-info",
        "lib/python*/site-packages/*.egg-info",
    )
    for pattern in patterns:
        for meta_dir in sorted(venv_host.glob(pattern)):
            metadata = meta_dir / (
                "METADATA" if meta_dir.suffix == ".dist-info" else "PKG-INFO"
            )
            name, version = _read_metadata_headers(metadata)
            if name is None:
                stem = meta_dir.name.rsplit(".", 1)[0]
                name, _, version = stem.partition("-")
            if name and version:
                packages[canonical_name(name)] = version
    return packages


def read_top_level_modules(venv_host: Path) -> set[str]:
    """Return the importable top-level names the venv's distributions provide."""
    names: set[str] = set()
    for site in venv_host.glob("lib/python*/site-packages"):
        for entry in site.iterdir():
            if entry.suffix in (".dist-info", ".egg-info"):
                names.update(_top_level_of(entry))
            elif entry.suffix == ".py":
                names.add(entry.stem)
            elif entry.is_dir() and entry.name.isidentifier():
                names.add(entry.name)
            elif entry.suffix == ".so":
                names.add(entry.name.split(".")[0])
    return names


def _top_level_of(meta_dir: Path) -> set[str]:
    try:
        text = (meta_dir / "top_level.txt").read_text(
            encoding="utf-8", errors="replace"
        )
        return {line.strip() for line in text.splitlines() if line.strip()}
    except OSError:
        pass
    try:
        record = (meta_dir / "RECORD").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    names = set()
    for line in record.splitlines():
        first = line.split(",", 1)[0].split("/", 1)[0]
        first = first.removesuffix(".py")
        if first.isidentifier():
            names.add(first)
    return names


def _read_metadata_headers(path: Path) -> tuple[str | None, str | None]:
    try:
        return read_metadata_headers(path)
    except OSError:
        return None, None


def _locate_interpreter(ctx: Context, info: VenvInfo) -> None:
    fs = ctx.fs
    for name in INTERPRETER_NAMES:
        candidate = posixpath.join(info.path, "bin", name)
        host = fs.host(candidate)
        if not host.exists() and not host.is_symlink():
            continue
        info.interpreter = candidate
        resolved, problem = fs.resolve(candidate)
        if problem:
            info.interpreter_problem = problem
            return
        resolved_host = fs.host(resolved)
        if not os.access(resolved_host, os.X_OK):
            info.interpreter_problem = f"{resolved} is not executable"
            return
        info.interpreter_host = host
        return
    info.interpreter_problem = f"{info.path}/bin has no python or python3"


def _probe(ctx: Context, info: VenvInfo) -> None:
    from doctor.probes import run_probe

    result = run_probe(
        str(info.interpreter_host),
        "venv",
        [],
        cwd=str(info.host_path),
        env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
        timeout=ctx.options.probe_timeout,
        cancel=ctx.cancelled,
    )
    if result.data is None:
        info.probe_error = result.error or "the interpreter produced no result"
        info.interpreter_problem = info.probe_error
    else:
        info.probe = result.data
