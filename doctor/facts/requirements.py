"""The deployment's ``requirements.txt``, parsed with pip's own grammar rules."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from doctor.context import Context, FactUnavailable, fact

MAX_INCLUDE_DEPTH = 10


class PinnedRequirement(NamedTuple):
    name: str
    text: str
    path: str
    line: int
    specifier: object
    marker: object | None


class RequirementProblem(NamedTuple):
    path: str
    line: int
    text: str
    message: str


@dataclass
class Requirements:
    path: str
    requirements: list[PinnedRequirement] = field(default_factory=list)
    problems: list[RequirementProblem] = field(default_factory=list)


@fact("requirements")
def requirements(ctx: Context) -> Requirements:
    directory = ctx.target.chdir.value
    path = posixpath.join(directory, "requirements.txt")
    if not ctx.fs.host(path).is_file():
        raise FactUnavailable(f"{path} does not exist, so no pins can be compared")
    result = Requirements(path=path)
    _read(ctx, path, result, depth=0)
    return result


def _logical_lines(text: str):
    """Yield (line number, text) with backslash continuations joined."""
    buffer, start = "", None
    for number, raw in enumerate(text.splitlines(), 1):
        if start is None:
            start = number
        if raw.endswith("\\"):
            buffer += raw[:-1]
            continue
        yield start, buffer + raw
        buffer, start = "", None
    if buffer:
        yield start, buffer


_INCLUDE = re.compile(
    r"^(?:(?P<short>-[rc])\s*=?\s*|(?P<long>--requirement|--constraint)(?:\s*=\s*|\s+))"
    r"(?P<file>\S+)"
)


def _read(
    ctx: Context,
    path: str,
    result: Requirements,
    depth: int,
    included_from: tuple[str, int, str] | None = None,
) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        text = ctx.fs.host(path).read_text(encoding="utf-8")
    except PermissionError as exc:
        if included_from is None:
            raise FactUnavailable(
                f"the doctor (uid {os.getuid()}) cannot read {path}: {exc.strerror};"
                " run it as root"
            ) from None
        where, number, line = included_from
        result.problems.append(
            RequirementProblem(
                where, number, line, f"{path} cannot be read: {exc.strerror}"
            )
        )
        return
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        where, number, line = included_from or (path, 0, "")
        result.problems.append(
            RequirementProblem(where, number, line, f"{path} cannot be read: {reason}")
        )
        return
    for number, line in _logical_lines(text):
        stripped = line.split(" #", 1)[0].strip()
        if not stripped or stripped.startswith("#"):
            continue
        include = _INCLUDE.match(stripped)
        if include:
            if depth >= MAX_INCLUDE_DEPTH:
                result.problems.append(
                    RequirementProblem(path, number, line, "includes nest too deep")
                )
                continue
            # Constraint files limit versions but install nothing themselves.
            if (include["short"] or include["long"]) in ("-r", "--requirement"):
                included = posixpath.join(posixpath.dirname(path), include["file"])
                _read(ctx, included, result, depth + 1, (path, number, line))
            continue
        if stripped.startswith("-"):
            if stripped.startswith(("-e", "--editable")):
                result.problems.append(
                    RequirementProblem(
                        path, number, line, "an editable install names no version"
                    )
                )
            continue
        try:
            requirement = Requirement(stripped)
        except InvalidRequirement as exc:
            result.problems.append(
                RequirementProblem(
                    path, number, line, f"not a valid requirement: {exc}"
                )
            )
            continue
        result.requirements.append(
            PinnedRequirement(
                name=requirement.name,
                text=stripped,
                path=path,
                line=number,
                specifier=requirement.specifier,
                marker=requirement.marker,
            )
        )
