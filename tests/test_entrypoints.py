"""The entry-point reader agrees with importlib.metadata on real metadata."""

from __future__ import annotations

import zipfile
from importlib import metadata

import pytest

from doctor.entrypoints import EntryPoint, entry_points

ENTRY_POINTS_TXT = """\
[gunicorn_doctor.checks]
extra = extra_checks.checks

# A comment, then another group.
[console_scripts]
extra-tool = extra_checks.cli:main
"""


def pairs(points) -> list[tuple[str, str]]:
    return sorted((point.name, point.value) for point in points)


@pytest.mark.parametrize(
    "group", ["gunicorn_doctor.checks", "console_scripts", "pytest11", "no.such"]
)
def test_installed_groups_match_importlib(group):
    expected = pairs(metadata.entry_points(group=group))
    assert pairs(entry_points(group)) == expected


def write_distribution(directory, dist_info: str, text: str) -> None:
    meta = directory / dist_info
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(f"Name: {dist_info.split('-')[0]}\n")
    (meta / "entry_points.txt").write_text(text)


def test_first_distribution_on_path_wins(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_distribution(first, "extra_checks-2.0.dist-info", ENTRY_POINTS_TXT)
    write_distribution(
        second,
        "Extra.Checks-1.0.dist-info",
        "[gunicorn_doctor.checks]\nold = old_checks\n",
    )
    path = [str(first), str(second)]

    found = entry_points("gunicorn_doctor.checks", path)

    assert pairs(found) == [("extra", "extra_checks.checks")]


def test_zip_on_path_uses_importlib(tmp_path):
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("zipped-1.0.dist-info/METADATA", "Name: zipped\n")
        bundle.writestr(
            "zipped-1.0.dist-info/entry_points.txt",
            "[gunicorn_doctor.checks]\nzipped = zipped.checks\n",
        )

    found = entry_points("gunicorn_doctor.checks", [str(archive)])

    assert pairs(found) == [("zipped", "zipped.checks")]


def test_load_resolves_attribute_path(tmp_path, monkeypatch):
    package = tmp_path / "extra_checks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("class Tool:\n    main = 'entry'\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    point = EntryPoint("tool", "extra_checks.cli:Tool.main", "console_scripts")

    assert point.load() == "entry"
