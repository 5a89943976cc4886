"""Static analysis of the app spec: find the module file and the object, run nothing.

Used when the app cannot be imported for real (static mode, a broken venv,
a ``--root`` tree), so that the obvious faults still show: a module file
that is not where gunicorn looks, an object name the module never defines,
a syntax error, or a third-party import the venv does not provide.
"""

from __future__ import annotations

import ast
import posixpath
import sys
from dataclasses import dataclass, field
from pathlib import Path

from doctor.context import Context, FactUnavailable, fact

SKIP_DIRS = {"venv", ".venv", "node_modules", ".git", "__pycache__", "site-packages"}
MAX_SEARCH_DEPTH = 3


@dataclass
class AppSource:
    spec: str
    module: str
    object: str
    base_dirs: list[str]
    module_path: str | None = None
    found_elsewhere: list[str] = field(default_factory=list)
    spec_error: str | None = None
    syntax_error: tuple[str, int | None] | None = None
    defined: dict[str, int] = field(default_factory=dict)
    callables: list[str] = field(default_factory=list)
    star_import: bool = False
    object_name: str | None = None
    attribute_path: bool = False
    missing_imports: list[tuple[str, int]] = field(default_factory=list)

    @property
    def object_defined(self) -> bool:
        return self.object_name in self.defined


def parse_spec(spec: str) -> tuple[str, str]:
    module, sep, obj = spec.partition(":")
    return module, (obj if sep else "application")


def object_name(obj: str) -> tuple[str | None, bool, str | None]:
    """Return (top-level name, is attribute path, syntax problem) of an app object."""
    try:
        expression = ast.parse(obj, mode="eval").body
    except SyntaxError:
        return None, False, f"{obj!r} is not a name or a function call"
    if isinstance(expression, ast.Name):
        return expression.id, False, None
    if isinstance(expression, ast.Call) and isinstance(expression.func, ast.Name):
        return expression.func.id, False, None
    if isinstance(expression, ast.Attribute):
        node = expression
        while isinstance(node, ast.Attribute):
            node = node.value
        if isinstance(node, ast.Name):
            return node.id, True, None
    return None, False, f"{obj!r} is not a name or a function call"


@fact("app_source")
def app_source(ctx: Context) -> AppSource:
    settings = ctx.fact("settings")
    spec = settings.app_uri or (ctx.target.app.value if ctx.target.app else None)
    if not spec:
        raise FactUnavailable("no app spec is known: pass it as APP (module:app)")
    module, obj = parse_spec(spec)
    chdir = settings.get("chdir")
    if settings.source("chdir").kind == "default" or not isinstance(chdir, str):
        chdir = ctx.target.chdir.value
    bases = [chdir]
    pythonpath = settings.get("pythonpath")
    if isinstance(pythonpath, str) and pythonpath:
        bases += [posixpath.join(chdir, p) for p in pythonpath.split(",")]
    result = AppSource(spec=spec, module=module, object=obj, base_dirs=bases)
    name, is_attribute, problem = object_name(obj)
    result.object_name, result.attribute_path, result.spec_error = (
        name,
        is_attribute,
        problem,
    )
    if not module or not all(part.isidentifier() for part in module.split(".")):
        result.spec_error = f"{module!r} is not a Python module name"
        return result
    result.module_path = _find_module(ctx, bases, module)
    if result.module_path is None:
        result.found_elsewhere = _search(ctx.fs.host(chdir), module)
        return result
    _analyse(ctx, result, chdir)
    return result


def _find_module(ctx: Context, bases: list[str], module: str) -> str | None:
    relative = module.replace(".", "/")
    for base in bases:
        for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
            path = posixpath.join(base, candidate)
            if ctx.fs.host(path).is_file():
                return path
    return None


def _search(root: Path, module: str) -> list[str]:
    wanted = module.replace(".", "/")
    found = []

    def walk(directory: Path, depth: int) -> None:
        if depth > MAX_SEARCH_DEPTH or len(found) >= 5:
            return
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            return
        for entry in entries:
            if (
                entry.is_dir()
                and not entry.is_symlink()
                and entry.name not in SKIP_DIRS
            ):
                walk(entry, depth + 1)
        for suffix in (".py", "/__init__.py"):
            candidate = directory / f"{wanted}{suffix}"
            if depth > 0 and candidate.is_file():
                found.append(str(candidate.relative_to(root)))

    walk(root, 0)
    return found


def _analyse(ctx: Context, result: AppSource, chdir: str) -> None:
    host = ctx.fs.host(result.module_path)
    try:
        source = host.read_bytes()
        tree = ast.parse(source, filename=result.module_path)
    except SyntaxError as exc:
        result.syntax_error = (exc.msg, exc.lineno)
        return
    except (OSError, ValueError) as exc:
        result.syntax_error = (str(exc), None)
        return
    imports: list[tuple[str, int]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    result.defined[target.id] = node.lineno
                    if isinstance(node.value, ast.Call):
                        result.callables.append(target.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            result.defined[node.name] = node.lineno
            result.callables.append(node.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                result.defined[(alias.asname or alias.name).split(".")[0]] = node.lineno
                imports.append((alias.name.split(".")[0], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                imports.append((node.module.split(".")[0], node.lineno))
            for alias in node.names:
                if alias.name == "*":
                    result.star_import = True
                else:
                    result.defined[alias.asname or alias.name] = node.lineno
    result.missing_imports = _missing_imports(ctx, imports, result.base_dirs)


def _missing_imports(
    ctx: Context, imports: list[tuple[str, int]], bases: list[str]
) -> list[tuple[str, int]]:
    try:
        venv = ctx.fact("venv")
    except FactUnavailable:
        return []
    if not venv.exists:
        return []
    from doctor.facts.venv import read_top_level_modules

    provided = read_top_level_modules(venv.host_path)
    if not provided:
        return []
    missing = []
    for name, line in imports:
        if name in sys.stdlib_module_names or name in provided:
            continue
        local = any(
            ctx.fs.host(posixpath.join(base, name + suffix)).exists()
            for base in bases
            for suffix in (".py", "")
        )
        if not local:
            missing.append((name, line))
    return missing
