"""Check registration and discovery through the ``gunicorn_doctor.checks`` group.

A check is a function of a :class:`~doctor.context.Context` that yields
findings. The :func:`check` decorator turns it into a :class:`CheckSpec`.
Packages, this one included, expose their checks through the entry-point
group ``gunicorn_doctor.checks``: an entry point names a module (all the
specs defined in it are loaded), a single spec, or a list of specs.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from doctor.findings import AREAS, Finding

ENTRY_POINT_GROUP = "gunicorn_doctor.checks"

CheckFunction = Callable[..., Iterable[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    area: str
    title: str
    function: CheckFunction
    needs: tuple[str, ...] = ()
    live: bool = False
    executes: bool = False
    source: str = field(default="", compare=False)

    @property
    def docs(self) -> str:
        return inspect.cleandoc(self.function.__doc__ or self.title)

    def __call__(self, ctx) -> Iterable[Finding]:
        return self.function(ctx)


def check(
    id: str,
    *,
    area: str,
    title: str,
    needs: Iterable[str] = (),
    live: bool = False,
    executes: bool = False,
) -> Callable[[CheckFunction], CheckSpec]:
    """Declare a check.

    ``needs`` names the facts the check reads, ``live`` marks checks that look
    at the running host (processes, sockets), and ``executes`` marks checks
    that run the target's code; both are skipped in static mode.
    """
    if area not in AREAS:
        raise ValueError(f"unknown area {area!r} for check {id!r}; use one of {AREAS}")

    def decorate(function: CheckFunction) -> CheckSpec:
        return CheckSpec(
            id=id,
            area=area,
            title=title,
            function=function,
            needs=tuple(needs),
            live=live,
            executes=executes,
            source=function.__module__,
        )

    return decorate


class RegistryError(Exception):
    pass


@dataclass
class Registry:
    checks: dict[str, CheckSpec]
    load_errors: list[str]

    def find(self, id: str) -> CheckSpec | None:
        return self.checks.get(id)

    def select(
        self, select: Iterable[str] = (), ignore: Iterable[str] = ()
    ) -> list[CheckSpec]:
        """Return the checks chosen by id or area, in registration order."""
        select, ignore = set(select), set(ignore)
        chosen = []
        for spec in self.checks.values():
            if select and spec.id not in select and spec.area not in select:
                continue
            if spec.id in ignore or spec.area in ignore:
                continue
            chosen.append(spec)
        return chosen

    def unknown_names(self, names: Iterable[str]) -> list[str]:
        known = set(self.checks) | {spec.area for spec in self.checks.values()}
        return sorted(set(names) - known)


def _specs_in(obj: object) -> list[CheckSpec]:
    if isinstance(obj, CheckSpec):
        return [obj]
    if isinstance(obj, types.ModuleType):
        return [v for v in vars(obj).values() if isinstance(v, CheckSpec)]
    if isinstance(obj, list | tuple):
        return [v for v in obj if isinstance(v, CheckSpec)]
    return []


def load_registry() -> Registry:
    """Load every check exposed through the entry-point group.

    A plugin that fails to import is reported in ``load_errors`` and the
    others still load. Two checks with one id is a load error too, because
    ids are a stable contract.
    """
    from doctor.entrypoints import entry_points as group_entry_points

    checks: dict[str, CheckSpec] = {}
    errors: list[str] = []
    entry_points = sorted(group_entry_points(ENTRY_POINT_GROUP), key=_builtin_first)
    if not entry_points:
        raise RegistryError(
            f"no checks are registered in the entry-point group {ENTRY_POINT_GROUP!r};"
            " install gunicorn-doctor with pip (for a source tree: pip install -e .)"
        )
    for entry_point in entry_points:
        try:
            loaded = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
            errors.append(f"{entry_point.value}: {type(exc).__name__}: {exc}")
            continue
        specs = _specs_in(loaded)
        if not specs:
            errors.append(f"{entry_point.value}: exposes no checks")
        for spec in specs:
            if spec.id in checks and checks[spec.id] is not spec:
                errors.append(
                    f"{entry_point.value}: check id {spec.id!r} is already"
                    f" registered by {checks[spec.id].source}"
                )
                continue
            checks[spec.id] = spec
    ordered = sorted(checks.values(), key=_area_order)
    return Registry(checks={spec.id: spec for spec in ordered}, load_errors=errors)


def _area_order(spec: CheckSpec) -> int:
    return AREAS.index(spec.area) if spec.area in AREAS else len(AREAS)


def _builtin_first(entry_point) -> tuple[int, str]:
    builtin = entry_point.value.startswith("checks.")
    return (0 if builtin else 1, entry_point.value)
