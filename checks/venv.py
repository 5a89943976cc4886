"""Checks of the deployment's virtualenv and of the launcher systemd runs."""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from typing import NamedTuple

from doctor import (
    Context,
    FactUnavailable,
    Location,
    check,
    error,
    info,
    ok,
    warning,
)
from doctor.findings import Finding


def _recreate_fix(venv) -> str:
    version = venv.pyvenv_cfg.get("version") or venv.pyvenv_cfg.get("version_info")
    python = "python3"
    if version:
        python = "python" + ".".join(version.split(".")[:2])
    return (
        f"{python} -m venv --clear {venv.path}\n"
        f"{venv.path}/bin/pip install -r requirements.txt"
    )


@check(
    "venv-exists",
    area="venv",
    title="The virtualenv exists",
    needs=("venv",),
)
def venv_exists(ctx: Context):
    """Fail when the virtualenv the deployment names is missing or is not a venv.

    The venv comes from ``--venv``, the directory of the unit's ``ExecStart``
    binary, the unit's ``PATH``, or ``venv/`` / ``.venv/`` in the deployment
    directory; the report header says which.
    """
    venv = ctx.fact("venv")
    source = ctx.target.venv.source
    if not venv.exists and venv.host_path.exists():
        yield error(
            f"virtualenv {venv.path} is not a directory",
            f"The deployment names {venv.path} ({source}) as its virtualenv, but"
            " it is a file, so gunicorn cannot start from it.",
            fix="Name the venv directory, the one that contains pyvenv.cfg and"
            f" bin/python, or move the file away and create the venv:\n"
            f"python3 -m venv {venv.path}\n"
            f"{venv.path}/bin/pip install -r requirements.txt",
        )
        return
    if not venv.exists:
        yield error(
            f"virtualenv {venv.path} does not exist",
            f"The deployment names {venv.path} ({source}), but there is no such"
            " directory, so gunicorn cannot start from it.",
            fix=f"python3 -m venv {venv.path}\n"
            f"{venv.path}/bin/pip install -r requirements.txt",
        )
        return
    if not venv.is_venv:
        yield warning(
            f"{venv.path} has no pyvenv.cfg",
            f"{venv.path} ({source}) exists but is not a virtualenv made by"
            " `python -m venv` or virtualenv; its interpreter may be the system's.",
            fix=_recreate_fix(venv),
        )
        return
    yield ok(f"virtualenv {venv.path} exists", f"found via {source}")


@check(
    "venv-interpreter",
    area="venv",
    title="The venv's interpreter runs",
    needs=("venv",),
)
def venv_interpreter(ctx: Context):
    """Fail when the venv's ``bin/python`` cannot run.

    The classic case is an interpreter symlink left dangling after an OS or
    Python upgrade removed the Python the venv was made from: the venv still
    looks intact, but every program in its ``bin/`` fails with "No such file
    or directory". The only fix is to recreate the venv.
    """
    venv = ctx.fact("venv")
    if not venv.exists:
        raise FactUnavailable(f"the virtualenv {venv.path} does not exist")
    home = venv.pyvenv_cfg.get("home")
    evidence = [f"pyvenv.cfg: home = {home}"] if home else []
    if venv.interpreter_problem:
        if "dangling symlink" in venv.interpreter_problem:
            detail = (
                f"{venv.interpreter} points at an interpreter that no longer"
                " exists, typically after an OS or Python upgrade; every"
                " program in the venv fails to start."
            )
        else:
            detail = f"{venv.interpreter or venv.path + '/bin/python'} cannot run."
        yield error(
            f"the venv's interpreter is broken: {venv.interpreter_problem}",
            detail,
            fix=_recreate_fix(venv),
            evidence=evidence + [venv.interpreter_problem],
        )
        return
    if ctx.static:
        yield ok(
            f"{venv.interpreter} resolves to an executable file",
            "static mode: the interpreter was not run",
            evidence=evidence,
        )
        return
    yield ok(
        f"{venv.interpreter} runs (Python {venv.python_version})",
        evidence=evidence,
    )


@check(
    "venv-gunicorn",
    area="venv",
    title="gunicorn is installed in the venv",
    needs=("venv",),
)
def venv_gunicorn(ctx: Context):
    """Fail when gunicorn is not installed in the venv, and report its version.

    The version matters: settings, worker classes and log lines differ between
    gunicorn 20.x and 27.x, and the doctor resolves settings with the
    gunicorn the venv really has.
    """
    venv = ctx.fact("venv")
    if not venv.exists:
        raise FactUnavailable(f"the virtualenv {venv.path} does not exist")
    if venv.probe is None and not venv.static_packages:
        raise FactUnavailable(
            f"the venv's interpreter could not be run ({venv.probe_error or venv.interpreter_problem})"
            " and it has no readable *.dist-info metadata"
        )
    version = venv.gunicorn_version
    problem = (venv.probe or {}).get("gunicorn_import_error")
    # Quoted because a pin such as gunicorn>=20.1 would otherwise be a
    # shell redirection.
    requirement = shlex.quote(_requirement_pin(ctx, "gunicorn") or "gunicorn")
    install = f"{venv.path}/bin/pip install {requirement}"
    if version is None:
        yield error(
            f"gunicorn is not installed in {venv.path}",
            "The service cannot start: its gunicorn must come from the venv that"
            " has the app's dependencies.",
            fix=install,
            evidence=[problem] if problem else [],
        )
        return
    if problem:
        detail = problem
        fix = f"{venv.path}/bin/pip install --force-reinstall {requirement}"
        if "pkg_resources" in problem:
            # Reinstalling gunicorn would not help: its setuptools dependency
            # resolves to a release without pkg_resources (removed in 82.0.0).
            detail = (
                f"gunicorn {version} imports pkg_resources, which setuptools"
                f" removed in 82.0.0. {problem}"
            )
            fix = f"{venv.path}/bin/pip install {shlex.quote('setuptools<82')}"
        yield error(
            f"gunicorn {version} is installed in {venv.path} but does not import",
            detail,
            fix=fix,
            evidence=[problem],
        )
        return
    yield ok(
        f"gunicorn {version} is installed in {venv.path}",
        f"read from {venv.packages_source}",
    )


def _requirement_pin(ctx: Context, name: str) -> str | None:
    try:
        requirements = ctx.fact("requirements")
    except FactUnavailable:
        return None
    for requirement in requirements.requirements:
        if requirement.name == name:
            return requirement.text
    return None


class Launcher(NamedTuple):
    path: str
    kind: str
    shebang: str | None
    shebang_interpreter: str | None


def _read_launcher(ctx: Context, path: str) -> tuple[Launcher | None, str | None]:
    host = ctx.fs.host(path)
    resolved, problem = ctx.fs.resolve(path)
    if problem:
        return None, problem
    host = ctx.fs.host(resolved)
    if not host.exists():
        return None, f"{path} does not exist"
    if not os.access(host, os.X_OK):
        return None, f"{path} is not executable"
    try:
        with open(host, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        return None, f"{path} cannot be read: {exc.strerror}"
    if not head.startswith(b"#!"):
        return Launcher(path, "binary", None, None), None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    words = shlex.split(line) if line else []
    interpreter = words[0] if words else None
    if interpreter and posixpath.basename(interpreter) == "env" and len(words) > 1:
        interpreter = words[-1]
    if line.startswith("/bin/sh") and b"exec" in head:
        # pip writes a sh trampoline when the interpreter path is too long
        # for a shebang line: '#!/bin/sh' then "'''exec' /path/python ...".
        match = re.search(rb"exec' (\S+)", head)
        if match:
            interpreter = match.group(1).decode("utf-8", "replace").strip("'\"")
    return Launcher(path, "script", line, interpreter), None


@check(
    "venv-launcher",
    area="venv",
    title="The launcher systemd runs belongs to the venv",
    needs=("unit", "venv"),
)
def venv_launcher(ctx: Context):
    """Fail when the service's ``ExecStart`` program is not this venv's gunicorn.

    A unit that runs ``/usr/bin/gunicorn`` or ``~/.local/bin/gunicorn`` starts
    a gunicorn whose Python lacks the app's dependencies; a launcher whose
    shebang names another interpreter (a venv copied or moved to a new path
    keeps the old shebangs) fails with "bad interpreter" or imports from the
    wrong place.
    """
    unit = ctx.fact("unit")
    venv = ctx.fact("venv")
    target = ctx.target
    if target.launcher is None:
        raise FactUnavailable(f"the unit {target.unit.value} has no ExecStart")
    entry = unit.exec_start_entry
    location = Location(entry.path, entry.line) if entry else None
    launcher_path = target.launcher.value
    evidence = [f"ExecStart={entry.value}"] if entry else []
    venv_bin = posixpath.join(venv.path, "bin")
    fix_line = f"ExecStart={venv_bin}/gunicorn {shlex.join(target.argv)}"

    if not launcher_path.startswith("/"):
        yield error(
            f"ExecStart runs {launcher_path!r}, not an absolute path",
            "systemd looks a relative command up in its own fixed PATH, not in"
            " the venv, so the venv's gunicorn is not what runs.",
            fix=fix_line,
            evidence=evidence,
            location=location,
        )
        return
    launcher, problem = _read_launcher(ctx, launcher_path)
    if problem:
        yield error(
            f"the launcher {launcher_path} cannot run: {problem}",
            "systemd fails to start the service with status 203/EXEC.",
            fix=fix_line,
            evidence=evidence,
            location=location,
        )
        return
    findings = list(
        _launcher_findings(ctx, launcher, venv, evidence, location, fix_line)
    )
    yield from findings or [
        ok(
            f"ExecStart runs {launcher_path} from the venv",
            f"shebang: #!{launcher.shebang}" if launcher.shebang else "",
            evidence=evidence,
        )
    ]


def _launcher_findings(
    ctx: Context, launcher: Launcher, venv, evidence, location, fix_line
) -> list[Finding]:
    venv_bin = posixpath.join(venv.path, "bin")
    in_venv = posixpath.dirname(launcher.path) == venv_bin
    basename = posixpath.basename(launcher.path)
    if not in_venv:
        where = _describe_foreign(launcher.path)
        is_python = basename.startswith("python")
        detail = (
            f"The service starts {launcher.path} ({where}), not the venv"
            f" {venv.path}; that gunicorn's Python does not see the packages"
            " installed in the venv."
        )
        if is_python:
            detail = (
                f"The service runs {launcher.path} ({where}) with -m gunicorn,"
                f" not the venv's interpreter {venv_bin}/python."
            )
        return [
            error(
                f"ExecStart runs {launcher.path}, outside the venv {venv.path}",
                detail,
                fix=fix_line,
                evidence=evidence,
                location=location,
            )
        ]
    if launcher.kind != "script" or launcher.shebang_interpreter is None:
        return []
    interpreter = launcher.shebang_interpreter
    if posixpath.dirname(interpreter) != venv_bin:
        return [
            error(
                f"{launcher.path} starts {interpreter}, not the venv's Python",
                f"The launcher's shebang is #!{launcher.shebang}. A venv that was"
                " copied or moved keeps the shebangs of its old path, so its"
                " scripts run another interpreter or fail with 'bad interpreter'.",
                fix=_recreate_fix(venv),
                evidence=[*evidence, f"{launcher.path}: #!{launcher.shebang}"],
                location=location,
            )
        ]
    _resolved, problem = ctx.fs.resolve(interpreter)
    if problem:
        return [
            error(
                f"the launcher's interpreter is broken: {problem}",
                f"{launcher.path} starts {interpreter}, which cannot run.",
                fix=_recreate_fix(venv),
                evidence=[*evidence, f"{launcher.path}: #!{launcher.shebang}"],
                location=location,
            )
        ]
    if not ctx.static and venv.probe is not None and venv.gunicorn_version is None:
        return [
            error(
                f"{launcher.path} cannot import gunicorn",
                f"The launcher's interpreter {interpreter} has no gunicorn.",
                fix=f"{venv.path}/bin/pip install gunicorn",
                evidence=evidence,
                location=location,
            )
        ]
    return []


def _describe_foreign(path: str) -> str:
    if "/.local/bin/" in path:
        return "a user's pip install --user"
    if path.startswith(("/usr/bin/", "/bin/", "/usr/sbin/")):
        return "the system's package"
    if path.startswith("/usr/local/bin/"):
        return "a system-wide pip install"
    return "another environment"


@check(
    "venv-requirements",
    area="venv",
    title="requirements.txt is installed in the venv",
    needs=("venv", "requirements"),
)
def venv_requirements(ctx: Context):
    """Fail when a package that requirements.txt pins is missing or at another version.

    Reads ``requirements.txt`` in the deployment directory (following
    ``-r`` includes) and compares each requirement with the distributions
    installed in the venv. Editable lines (``-e``) name no version, so they
    are listed as information, not compared. A direct URL
    (``name @ https://...``) is checked for presence only.
    """
    requirements = ctx.fact("requirements")
    venv = ctx.fact("venv")
    if not venv.exists:
        raise FactUnavailable(f"the virtualenv {venv.path} does not exist")
    if venv.probe is None and not venv.static_packages:
        raise FactUnavailable(
            f"the venv's packages cannot be listed: its interpreter did not run"
            f" ({venv.probe_error or venv.interpreter_problem}) and it has no"
            " *.dist-info metadata"
        )
    installed = venv.packages
    findings = list(_requirement_problems(requirements, installed, venv))
    not_compared = []
    for problem in requirements.problems:
        location = Location(problem.path, problem.line)
        # An editable install is a valid line that has no version to compare,
        # so it is reported as information, not as a fault of the file.
        if problem.text.lstrip().startswith(("-e", "--editable")):
            not_compared.append(
                info(
                    f"{problem.path}:{problem.line} not compared: {problem.message}",
                    f"line: {problem.text}",
                    location=location,
                )
            )
            continue
        findings.append(
            warning(
                f"{problem.path}:{problem.line} cannot be checked: {problem.message}",
                f"line: {problem.text}",
                location=location,
            )
        )
    if not findings:
        findings.append(
            ok(
                f"all {len(requirements.requirements)} requirements of"
                f" {requirements.path} are installed at compatible versions"
            )
        )
    yield from findings
    yield from not_compared


def _requirement_problems(requirements, installed: dict[str, str], venv):
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    missing, mismatched = [], []
    for requirement in requirements.requirements:
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = installed.get(name)
        if version is None:
            missing.append(requirement)
            continue
        try:
            compatible = requirement.specifier.contains(
                Version(version), prereleases=True
            )
        except InvalidVersion:
            compatible = False
        if not compatible:
            mismatched.append((requirement, version))
    pip = f"{venv.path}/bin/pip install -r {requirements.path}"
    if missing:
        names = ", ".join(r.name for r in missing)
        yield error(
            f"{len(missing)} required package(s) missing from the venv: {names}",
            f"{requirements.path} lists them but {venv.path} does not have them;"
            " the app fails with ModuleNotFoundError when it imports them.",
            fix=pip,
            evidence=[f"{r.path}:{r.line}: {r.text}" for r in missing]
            + [f"installed packages read from {venv.packages_source}"],
            location=Location(missing[0].path, missing[0].line),
        )
    if mismatched:
        names = ", ".join(r.name for r, _version in mismatched)
        yield warning(
            f"{len(mismatched)} package(s) installed at a version requirements.txt"
            f" does not allow: {names}",
            "The venv drifted from the pinned requirements; the app runs with"
            " versions it was not tested with.",
            fix=pip,
            evidence=[
                f"{r.path}:{r.line}: {r.text} (installed: {v})" for r, v in mismatched
            ]
            + [f"installed packages read from {venv.packages_source}"],
            location=Location(mismatched[0][0].path, mismatched[0][0].line),
        )
