"""requirements.txt reading: includes in every spelling pip accepts, and bad lines."""

import pytest

from doctor.context import Context
from doctor.rootfs import RootFS
from doctor.target import Sourced, Target


def read(directory):
    target = Target(fs=RootFS("/"), chdir=Sourced(str(directory), "test"))
    return Context(target).fact("requirements")


@pytest.mark.parametrize(
    "line",
    ["-r base.txt", "-rbase.txt", "--requirement=base.txt", "--requirement base.txt"],
)
def test_include_spellings(tmp_path, line):
    (tmp_path / "base.txt").write_text("flask==3.0.0\n")
    (tmp_path / "requirements.txt").write_text(f"{line}\nredis==5.0.1\n")
    result = read(tmp_path)
    assert [r.name for r in result.requirements] == ["flask", "redis"]
    assert result.problems == []


def test_constraints_install_nothing(tmp_path):
    (tmp_path / "constraints.txt").write_text("flask==3.0.0\n")
    (tmp_path / "requirements.txt").write_text("-c constraints.txt\nredis\n")
    assert [r.name for r in read(tmp_path).requirements] == ["redis"]


def test_missing_include_points_at_including_line(tmp_path):
    (tmp_path / "requirements.txt").write_text("flask\n-r missing.txt\n")
    (problem,) = read(tmp_path).problems
    assert problem.path == f"{tmp_path}/requirements.txt"
    assert problem.line == 2
    assert "missing.txt cannot be read" in problem.message


def test_invalid_line_reported(tmp_path):
    (tmp_path / "requirements.txt").write_text("flask\nnot a requirement!!\n")
    (problem,) = read(tmp_path).problems
    assert problem.line == 2
    assert "not a valid requirement" in problem.message
