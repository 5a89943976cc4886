"""Truth tables of the venv checks, run through the CLI against real venvs."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import GUNICORN_NEW_VERSION, GUNICORN_OLD_VERSION, make_venv
from tests.helpers import copy_fixture, findings_of, run_doctor, run_json

GONE_PYTHON = "/usr/bin/python3.9"


def run_checks(chdir: Path, venv: Path, *args: str, select: str = "venv"):
    """Run ``check --format json`` on a deployment directory and venv."""
    return run_json(
        "check", "--chdir", str(chdir), "--venv", str(venv), "--select", select, *args
    )


def single(report: dict, check_id: str) -> dict:
    findings = findings_of(report, check_id)
    assert len(findings) == 1, findings
    return findings[0]


def installed_version(venv: Path, name: str) -> str:
    site_packages = [str(path) for path in venv.glob("lib/python*/site-packages")]
    distribution = next(importlib.metadata.distributions(name=name, path=site_packages))
    return distribution.version


def write_unit(directory: Path, exec_start: str, working_directory: Path) -> Path:
    """Write ``x.service`` with ExecStart on line 3 and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    unit = directory / "x.service"
    unit.write_text(
        f"[Service]\nWorkingDirectory={working_directory}\nExecStart={exec_start}\n",
        encoding="utf-8",
    )
    return unit


def write_script(path: Path, text: str, mode: int = 0o755) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def copy_venv(source: Path, destination: Path) -> Path:
    """Copy a venv as ``cp -a`` would: its scripts keep the old shebangs."""
    shutil.copytree(source, destination, symlinks=True)
    return destination


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Return a copy of the healthy deployment directory."""
    return copy_fixture("healthy", tmp_path)


@pytest.fixture
def empty_project(tmp_path: Path) -> Path:
    """Return a deployment directory with no requirements.txt."""
    directory = tmp_path / "empty-project"
    directory.mkdir()
    return directory


@pytest.fixture
def dangling_venv(tmp_path: Path) -> Path:
    """Return a venv made by a Python that has since been removed."""
    if os.path.lexists(GONE_PYTHON):
        pytest.skip(f"{GONE_PYTHON} exists on this machine")
    venv = make_venv(tmp_path / "venv")
    for name in ("python", "python3"):
        link = venv / "bin" / name
        link.unlink()
        link.symlink_to(GONE_PYTHON)
    (venv / "pyvenv.cfg").write_text(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.9.2\n",
        encoding="utf-8",
    )
    return venv


# venv-exists


@pytest.mark.fires("venv-exists")
def test_exists_missing_venv(empty_project, tmp_path):
    venv = tmp_path / "missing"
    report, result = run_checks(empty_project, venv)
    finding = single(report, "venv-exists")
    assert finding["severity"] == "error"
    assert finding["title"] == f"virtualenv {venv} does not exist"
    assert "--venv option" in finding["detail"]
    assert f"python3 -m venv {venv}\n" in finding["fix"]
    assert result.returncode == 1


@pytest.mark.fires("venv-exists")
def test_exists_directory_without_pyvenv_cfg(empty_project, tmp_path):
    venv = tmp_path / "not-a-venv"
    (venv / "bin").mkdir(parents=True)
    report, _ = run_checks(empty_project, venv)
    finding = single(report, "venv-exists")
    assert finding["severity"] == "warning"
    assert finding["title"] == f"{venv} has no pyvenv.cfg"
    assert f"python3 -m venv --clear {venv}" in finding["fix"]


@pytest.mark.fires("venv-exists")
def test_exists_venv_path_is_file(empty_project, tmp_path):
    venv = tmp_path / "venv"
    venv.write_text("not a directory\n", encoding="utf-8")
    report, result = run_checks(empty_project, venv)
    finding = single(report, "venv-exists")
    assert finding["severity"] == "error"
    assert finding["title"] == f"virtualenv {venv} is not a directory"
    assert "it is a file" in finding["detail"]
    assert "pyvenv.cfg" in finding["fix"]
    assert "Traceback" not in result.stderr
    assert result.returncode == 1


@pytest.mark.quiet("venv-exists")
def test_exists_real_venv(empty_project, venv_gunicorn_new):
    report, _ = run_checks(empty_project, venv_gunicorn_new)
    finding = single(report, "venv-exists")
    assert finding["severity"] == "ok"
    assert finding["title"] == f"virtualenv {venv_gunicorn_new} exists"
    assert finding["detail"] == "found via --venv option"


# venv-interpreter


@pytest.mark.fires("venv-interpreter")
def test_interpreter_dangling_symlink(empty_project, dangling_venv):
    report, result = run_checks(empty_project, dangling_venv)
    finding = single(report, "venv-interpreter")
    assert finding["severity"] == "error"
    assert "dangling symlink" in finding["title"]
    assert GONE_PYTHON in finding["title"]
    assert "no longer exists" in finding["detail"]
    assert finding["fix"].startswith(f"python3.9 -m venv --clear {dangling_venv}\n")
    assert "pyvenv.cfg: home = /usr/bin" in finding["evidence"]
    assert any(GONE_PYTHON in line for line in finding["evidence"])
    assert result.returncode == 1


def test_interpreter_dangling_skips_gunicorn(empty_project, dangling_venv):
    report, _ = run_checks(empty_project, dangling_venv, select="venv-gunicorn")
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "skipped"
    assert "dangling symlink" in finding["detail"]


@pytest.mark.fires("venv-interpreter")
def test_interpreter_not_executable(empty_project, tmp_path):
    venv = make_venv(tmp_path / "venv")
    for name in ("python", "python3"):
        (venv / "bin" / name).unlink()
    write_script(venv / "bin" / "python", "#!/bin/sh\n", mode=0o644)
    report, _ = run_checks(empty_project, venv)
    finding = single(report, "venv-interpreter")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"the venv's interpreter is broken: {venv}/bin/python is not executable"
    )
    assert f"-m venv --clear {venv}" in finding["fix"]


@pytest.mark.fires("venv-interpreter")
def test_interpreter_not_python(empty_project, tmp_path):
    venv = make_venv(tmp_path / "venv")
    for name in ("python", "python3"):
        (venv / "bin" / name).unlink()
    write_script(venv / "bin" / "python", "#!/bin/sh\nexit 3\n")
    report, _ = run_checks(empty_project, venv)
    finding = single(report, "venv-interpreter")
    assert finding["severity"] == "error"
    assert "printed no JSON (exit status 3)" in finding["title"]
    assert f"-m venv --clear {venv}" in finding["fix"]


@pytest.mark.fires("venv-interpreter")
def test_interpreter_missing_from_bin(empty_project, tmp_path):
    venv = make_venv(tmp_path / "venv")
    for path in (venv / "bin").glob("python*"):
        path.unlink()
    report, _ = run_checks(empty_project, venv)
    finding = single(report, "venv-interpreter")
    assert finding["severity"] == "error"
    assert f"{venv}/bin has no python or python3" in finding["title"]


@pytest.mark.quiet("venv-interpreter")
def test_interpreter_runs(empty_project, venv_gunicorn_new):
    report, _ = run_checks(empty_project, venv_gunicorn_new)
    finding = single(report, "venv-interpreter")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        f"{venv_gunicorn_new}/bin/python runs (Python {platform.python_version()})"
    )
    assert any(line.startswith("pyvenv.cfg: home = ") for line in finding["evidence"])


@pytest.mark.quiet("venv-interpreter")
def test_interpreter_static_mode(empty_project, venv_gunicorn_new):
    report, _ = run_checks(empty_project, venv_gunicorn_new, "--static")
    finding = single(report, "venv-interpreter")
    assert finding["severity"] == "ok"
    assert "resolves to an executable file" in finding["title"]
    assert "not run" in finding["detail"]


# venv-gunicorn


@pytest.mark.fires("venv-gunicorn")
def test_gunicorn_missing_unpinned(empty_project, venv_no_gunicorn):
    report, result = run_checks(empty_project, venv_no_gunicorn)
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "error"
    assert finding["title"] == f"gunicorn is not installed in {venv_no_gunicorn}"
    assert finding["fix"] == f"{venv_no_gunicorn}/bin/pip install gunicorn"
    assert "ModuleNotFoundError: No module named 'gunicorn'" in finding["evidence"]
    assert result.returncode == 1


@pytest.mark.fires("venv-gunicorn")
def test_gunicorn_missing_uses_pin(project, venv_no_gunicorn):
    # The healthy fixture's requirements.txt pins gunicorn>=20.1; the quotes
    # keep a shell from reading ">" as a redirection.
    report, _ = run_checks(project, venv_no_gunicorn)
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "error"
    assert finding["fix"] == f"{venv_no_gunicorn}/bin/pip install 'gunicorn>=20.1'"


@pytest.mark.fires("venv-gunicorn")
def test_gunicorn_installed_not_importable(empty_project, venv_gunicorn_old, tmp_path):
    venv = copy_venv(venv_gunicorn_old, tmp_path / "venv")
    for site_packages in venv.glob("lib/python*/site-packages"):
        shutil.rmtree(site_packages / "pkg_resources")
    report, _ = run_checks(empty_project, venv)
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"gunicorn {GUNICORN_OLD_VERSION} is installed in {venv} but does not import"
    )
    assert "pkg_resources" in finding["detail"]
    assert finding["fix"] == f"{venv}/bin/pip install 'setuptools<82'"
    missing = "ModuleNotFoundError: No module named 'pkg_resources'"
    assert missing in finding["evidence"]


@pytest.mark.quiet("venv-gunicorn")
def test_gunicorn_new_version(empty_project, venv_gunicorn_new):
    report, _ = run_checks(empty_project, venv_gunicorn_new)
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        f"gunicorn {GUNICORN_NEW_VERSION} is installed in {venv_gunicorn_new}"
    )
    assert f"{venv_gunicorn_new}/bin/python" in finding["detail"]


@pytest.mark.quiet("venv-gunicorn")
def test_gunicorn_old_version(empty_project, venv_gunicorn_old):
    report, _ = run_checks(empty_project, venv_gunicorn_old)
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        f"gunicorn {GUNICORN_OLD_VERSION} is installed in {venv_gunicorn_old}"
    )


@pytest.mark.quiet("venv-gunicorn")
def test_gunicorn_read_from_metadata_static(empty_project, venv_gunicorn_new):
    report, _ = run_checks(empty_project, venv_gunicorn_new, "--static")
    finding = single(report, "venv-gunicorn")
    assert finding["severity"] == "ok"
    assert f"gunicorn {GUNICORN_NEW_VERSION}" in finding["title"]
    assert "*.dist-info" in finding["detail"]
    assert "not executed" in finding["detail"]


# venv-launcher


def launcher_report(tmp_path, project, venv, exec_start):
    unit = write_unit(tmp_path / "units", exec_start, project)
    report, result = run_json(
        "check",
        "--unit",
        str(unit),
        "--chdir",
        str(project),
        "--venv",
        str(venv),
        "--select",
        "venv-launcher",
    )
    return single(report, "venv-launcher"), unit, result


@pytest.mark.quiet("venv-launcher")
def test_launcher_venv_gunicorn(tmp_path, project, venv_gunicorn_new):
    launcher = f"{venv_gunicorn_new}/bin/gunicorn"
    exec_start = f"{launcher} -c gunicorn.conf.py app:app"
    finding, _, result = launcher_report(
        tmp_path, project, venv_gunicorn_new, exec_start
    )
    assert finding["severity"] == "ok"
    assert finding["title"] == f"ExecStart runs {launcher} from the venv"
    assert finding["detail"] == f"shebang: #!{venv_gunicorn_new}/bin/python"
    assert finding["evidence"] == [f"ExecStart={exec_start}"]
    assert result.returncode == 0


@pytest.mark.quiet("venv-launcher")
def test_launcher_venv_python_module(tmp_path, project, venv_gunicorn_new):
    exec_start = f"{venv_gunicorn_new}/bin/python -m gunicorn app:app"
    finding, _, _ = launcher_report(tmp_path, project, venv_gunicorn_new, exec_start)
    assert finding["severity"] == "ok"
    assert f"{venv_gunicorn_new}/bin/python from the venv" in finding["title"]


@pytest.mark.fires("venv-launcher")
def test_launcher_usr_bin_gunicorn(tmp_path, project, venv_gunicorn_new):
    # Whether or not /usr/bin/gunicorn exists here, it is not the venv's.
    exec_start = "/usr/bin/gunicorn -c gunicorn.conf.py app:app"
    finding, unit, result = launcher_report(
        tmp_path, project, venv_gunicorn_new, exec_start
    )
    assert finding["severity"] == "error"
    assert "/usr/bin/gunicorn" in finding["title"]
    assert finding["fix"] == (
        f"ExecStart={venv_gunicorn_new}/bin/gunicorn -c gunicorn.conf.py app:app"
    )
    assert finding["evidence"] == [f"ExecStart={exec_start}"]
    assert finding["location"] == {"path": str(unit), "line": 3}
    assert result.returncode == 1


@pytest.mark.fires("venv-launcher")
def test_launcher_user_site_gunicorn(tmp_path, project, venv_gunicorn_new):
    user_bin = tmp_path / "home" / "deploy" / ".local" / "bin"
    user_bin.mkdir(parents=True)
    shutil.copy2(venv_gunicorn_new / "bin" / "gunicorn", user_bin / "gunicorn")
    exec_start = f"{user_bin}/gunicorn app:app"
    finding, unit, _ = launcher_report(tmp_path, project, venv_gunicorn_new, exec_start)
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"ExecStart runs {user_bin}/gunicorn, outside the venv {venv_gunicorn_new}"
    )
    assert "pip install --user" in finding["detail"]
    assert finding["fix"] == f"ExecStart={venv_gunicorn_new}/bin/gunicorn app:app"
    assert finding["location"] == {"path": str(unit), "line": 3}


@pytest.mark.fires("venv-launcher")
def test_launcher_other_python_module(tmp_path, project, venv_gunicorn_new):
    exec_start = f"{sys.executable} -m gunicorn app:app"
    finding, _, _ = launcher_report(tmp_path, project, venv_gunicorn_new, exec_start)
    assert finding["severity"] == "error"
    assert f"outside the venv {venv_gunicorn_new}" in finding["title"]
    assert "with -m gunicorn" in finding["detail"]
    assert finding["fix"] == f"ExecStart={venv_gunicorn_new}/bin/gunicorn app:app"


@pytest.mark.fires("venv-launcher")
def test_launcher_relative_command(tmp_path, project, venv_gunicorn_new):
    exec_start = "gunicorn -c gunicorn.conf.py app:app"
    finding, unit, _ = launcher_report(tmp_path, project, venv_gunicorn_new, exec_start)
    assert finding["severity"] == "error"
    assert finding["title"] == "ExecStart runs 'gunicorn', not an absolute path"
    assert finding["fix"] == (
        f"ExecStart={venv_gunicorn_new}/bin/gunicorn -c gunicorn.conf.py app:app"
    )
    assert finding["location"] == {"path": str(unit), "line": 3}


@pytest.mark.fires("venv-launcher")
def test_launcher_copied_venv_shebang(tmp_path, project, venv_gunicorn_new):
    venv = copy_venv(venv_gunicorn_new, tmp_path / "copied-venv")
    launcher = venv / "bin" / "gunicorn"
    finding, unit, _ = launcher_report(tmp_path, project, venv, f"{launcher} app:app")
    old_python = f"{venv_gunicorn_new}/bin/python"
    assert finding["severity"] == "error"
    assert finding["title"] == f"{launcher} starts {old_python}, not the venv's Python"
    assert "copied or moved" in finding["detail"]
    assert f"{launcher}: #!{old_python}" in finding["evidence"]
    assert f"-m venv --clear {venv}\n" in finding["fix"]
    assert finding["location"] == {"path": str(unit), "line": 3}


@pytest.mark.fires("venv-launcher")
@pytest.mark.parametrize(
    ("shebang", "interpreter"),
    [
        ("/srv/old-place/venv/bin/python", "/srv/old-place/venv/bin/python"),
        ("/usr/bin/env python3", "python3"),
    ],
)
def test_launcher_foreign_shebang(
    tmp_path, project, venv_gunicorn_new, shebang, interpreter
):
    venv = make_venv(tmp_path / "venv")
    launcher = venv / "bin" / "gunicorn"
    script = (venv_gunicorn_new / "bin" / "gunicorn").read_text(encoding="utf-8")
    _, body = script.split("\n", 1)
    write_script(launcher, f"#!{shebang}\n{body}")
    finding, _, _ = launcher_report(tmp_path, project, venv, f"{launcher} app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == f"{launcher} starts {interpreter}, not the venv's Python"
    assert f"{launcher}: #!{shebang}" in finding["evidence"]
    assert f"-m venv --clear {venv}\n" in finding["fix"]


@pytest.mark.quiet("venv-launcher")
def test_launcher_sh_trampoline_own_python(tmp_path, project, venv_gunicorn_new):
    # pip writes this /bin/sh form when the interpreter path is too long for
    # a shebang line.
    venv = copy_venv(venv_gunicorn_new, tmp_path / "venv")
    launcher = venv / "bin" / "gunicorn"
    script = launcher.read_text(encoding="utf-8")
    _, body = script.split("\n", 1)
    trampoline = f"#!/bin/sh\n'''exec' \"{venv}/bin/python\" \"$0\" \"$@\"\n' '''\n"
    write_script(launcher, trampoline + body)
    finding, _, _ = launcher_report(tmp_path, project, venv, f"{launcher} app:app")
    assert finding["severity"] == "ok"
    assert finding["detail"] == "shebang: #!/bin/sh"


@pytest.mark.fires("venv-launcher")
def test_launcher_sh_trampoline_other_python(tmp_path, project, venv_gunicorn_new):
    venv = make_venv(tmp_path / "venv")
    launcher = venv / "bin" / "gunicorn"
    other = f"{venv_gunicorn_new}/bin/python"
    write_script(
        launcher, f"#!/bin/sh\n'''exec' \"{other}\" \"$0\" \"$@\"\n' '''\nimport sys\n"
    )
    finding, _, _ = launcher_report(tmp_path, project, venv, f"{launcher} app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == f"{launcher} starts {other}, not the venv's Python"


@pytest.mark.fires("venv-launcher")
def test_launcher_dangling_interpreter(tmp_path, project, dangling_venv):
    launcher = dangling_venv / "bin" / "gunicorn"
    write_script(launcher, f"#!{dangling_venv}/bin/python\nimport sys\n")
    finding, _, _ = launcher_report(
        tmp_path, project, dangling_venv, f"{launcher} app:app"
    )
    assert finding["severity"] == "error"
    assert finding["title"].startswith("the launcher's interpreter is broken: ")
    assert "dangling symlink" in finding["title"]
    assert f"-m venv --clear {dangling_venv}\n" in finding["fix"]


@pytest.mark.fires("venv-launcher")
def test_launcher_venv_without_gunicorn(tmp_path, project):
    venv = make_venv(tmp_path / "venv")
    launcher = venv / "bin" / "gunicorn"
    write_script(launcher, f"#!{venv}/bin/python\nimport sys\n")
    finding, _, _ = launcher_report(tmp_path, project, venv, f"{launcher} app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == f"{launcher} cannot import gunicorn"
    assert finding["fix"] == f"{venv}/bin/pip install gunicorn"


@pytest.mark.fires("venv-launcher")
def test_launcher_not_executable(tmp_path, project, venv_gunicorn_new):
    venv = copy_venv(venv_gunicorn_new, tmp_path / "venv")
    launcher = venv / "bin" / "gunicorn"
    launcher.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    finding, _, _ = launcher_report(tmp_path, project, venv, f"{launcher} app:app")
    assert finding["severity"] == "error"
    assert finding["title"] == (
        f"the launcher {launcher} cannot run: {launcher} is not executable"
    )
    assert "203/EXEC" in finding["detail"]


def test_launcher_skipped_without_unit(project, venv_gunicorn_new):
    report, _ = run_checks(project, venv_gunicorn_new, select="venv-launcher")
    finding = single(report, "venv-launcher")
    assert finding["severity"] == "skipped"
    assert "no systemd unit was found" in finding["detail"]
    assert "--unit" in finding["detail"]


# venv-requirements


@pytest.mark.fires("venv-requirements")
def test_requirements_missing_package(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text("flask\nredis==5.0.1\n", encoding="utf-8")
    report, result = run_checks(
        empty_project, venv_gunicorn_new, select="venv-requirements"
    )
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "error"
    assert finding["title"] == "1 required package(s) missing from the venv: redis"
    assert f"{requirements}:2: redis==5.0.1" in finding["evidence"]
    assert finding["location"] == {"path": str(requirements), "line": 2}
    assert finding["fix"] == f"{venv_gunicorn_new}/bin/pip install -r {requirements}"
    assert result.returncode == 1


@pytest.mark.fires("venv-requirements")
def test_requirements_unsatisfied_pin(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text("gunicorn\nflask==1.0\n", encoding="utf-8")
    flask_version = installed_version(venv_gunicorn_new, "flask")
    report, result = run_checks(
        empty_project, venv_gunicorn_new, select="venv-requirements"
    )
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "warning"
    assert finding["title"].endswith("does not allow: flask")
    assert (
        f"{requirements}:2: flask==1.0 (installed: {flask_version})"
        in finding["evidence"]
    )
    assert finding["location"] == {"path": str(requirements), "line": 2}
    assert result.returncode == 0


@pytest.mark.fires("venv-requirements")
def test_requirements_follows_include(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    included = empty_project / "other.txt"
    requirements.write_text("# pinned\nflask\n-r other.txt\n", encoding="utf-8")
    included.write_text("redis\n", encoding="utf-8")
    report, _ = run_checks(empty_project, venv_gunicorn_new, select="venv-requirements")
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "error"
    assert finding["title"].endswith("missing from the venv: redis")
    assert f"{included}:1: redis" in finding["evidence"]
    assert finding["location"] == {"path": str(included), "line": 1}


@pytest.mark.fires("venv-requirements")
def test_requirements_unreadable_include(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text("flask\n-r missing.txt\n", encoding="utf-8")
    report, _ = run_checks(empty_project, venv_gunicorn_new, select="venv-requirements")
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "warning"
    assert f"{empty_project}/missing.txt" in finding["title"]
    assert "cannot be read" in finding["title"]


@pytest.mark.fires("venv-requirements")
def test_requirements_invalid_line(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text("flask\nflask>=\n", encoding="utf-8")
    report, _ = run_checks(empty_project, venv_gunicorn_new, select="venv-requirements")
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "warning"
    assert finding["title"].startswith(f"{requirements}:2 cannot be checked")
    assert "not a valid requirement" in finding["title"]
    assert finding["location"] == {"path": str(requirements), "line": 2}


@pytest.mark.quiet("venv-requirements")
def test_requirements_editable_not_compared(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text("flask\n-e ./localpkg\n", encoding="utf-8")
    report, result = run_checks(
        empty_project, venv_gunicorn_new, select="venv-requirements"
    )
    findings = findings_of(report, "venv-requirements")
    severities = [finding["severity"] for finding in findings]
    assert severities == ["ok", "info"]
    editable = findings[1]
    assert editable["title"] == (
        f"{requirements}:2 not compared: an editable install names no version"
    )
    assert editable["detail"] == "line: -e ./localpkg"
    assert editable["location"] == {"path": str(requirements), "line": 2}
    assert result.returncode == 0


@pytest.mark.quiet("venv-requirements")
def test_requirements_all_installed(project, venv_gunicorn_new):
    report, result = run_checks(project, venv_gunicorn_new, select="venv-requirements")
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "ok"
    assert finding["title"] == (
        f"all 2 requirements of {project}/requirements.txt are installed at"
        " compatible versions"
    )
    assert result.returncode == 0


@pytest.mark.quiet("venv-requirements")
def test_requirements_marker_excludes_line(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text('flask\nredis; python_version < "3.0"\n', encoding="utf-8")
    report, _ = run_checks(empty_project, venv_gunicorn_new, select="venv-requirements")
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "ok"


@pytest.mark.fires("venv-requirements")
def test_requirements_static_reads_metadata(empty_project, venv_gunicorn_new):
    requirements = empty_project / "requirements.txt"
    requirements.write_text("flask==1.0\n", encoding="utf-8")
    report, _ = run_checks(
        empty_project, venv_gunicorn_new, "--static", select="venv-requirements"
    )
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "warning"
    assert any("*.dist-info" in line for line in finding["evidence"])


def test_requirements_skipped_without_file(empty_project, venv_gunicorn_new):
    report, _ = run_checks(empty_project, venv_gunicorn_new, select="venv-requirements")
    finding = single(report, "venv-requirements")
    assert finding["severity"] == "skipped"
    assert f"{empty_project}/requirements.txt does not exist" in finding["detail"]


# Bad input


def test_missing_venv_full_run(empty_project, tmp_path):
    venv = tmp_path / "no-such-venv"
    result = run_doctor(
        "check", "--chdir", str(empty_project), "--venv", str(venv), "--ascii"
    )
    assert "Traceback" not in result.stderr
    assert f"virtualenv {venv} does not exist" in result.stdout
    assert f"python3 -m venv {venv}" in result.stdout
    assert result.returncode == 1


def test_missing_chdir_is_usage_error(tmp_path, venv_gunicorn_new):
    chdir = tmp_path / "no-such-dir"
    result = run_doctor(
        "check", "--chdir", str(chdir), "--venv", str(venv_gunicorn_new)
    )
    assert "Traceback" not in result.stderr
    assert f"--chdir {chdir}: no such directory" in result.stderr
    assert result.returncode == 2
