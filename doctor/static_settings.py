"""Estimate effective settings without executing anything.

Reads the command line and ``GUNICORN_CMD_ARGS`` with the flag table of the
newest gunicorn whose settings table ships with the doctor, and the config
file with ``ast``. Only top-level assignments of literals give values. Any
other expression is stored as source text and marked non-literal. Used in static mode and whenever the
target's own gunicorn cannot be asked.
"""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.settings_model import EffectiveSettings, SettingSource, settings_table

NO_VALUE_ACTIONS = {"store_true", "store_false", "store_const", "count"}


class ArgvError(ValueError):
    pass


@dataclass
class ParsedArgv:
    values: dict[str, Any] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)
    positional_indexes: list[int] = field(default_factory=list)


def _flag_index() -> dict[str, tuple[str, dict]]:
    index = {}
    for name, meta in settings_table()["settings"].items():
        for flag in meta["cli"]:
            index[flag] = (name, meta)
    return index


def _convert(meta: dict, raw: str) -> Any:
    """Convert a flag's text the way the setting's type would, when obvious."""
    default = meta.get("default")
    if meta.get("validator") == "validate_pos_int" or (
        isinstance(default, int) and not isinstance(default, bool)
    ):
        try:
            return int(raw)
        except ValueError:
            return raw
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def parse_argv(argv: list[str]) -> ParsedArgv:
    """Parse gunicorn's command-line arguments the way its argparse parser would.

    Raises :class:`ArgvError` for a flag this gunicorn does not know or a
    flag missing its value.
    """
    index = _flag_index()
    parsed = ParsedArgv()
    tokens = list(enumerate(argv))
    while tokens:
        position, token = tokens.pop(0)
        if token == "--":
            parsed.positional.extend(t for _, t in tokens)
            parsed.positional_indexes.extend(i for i, _ in tokens)
            break
        if not token.startswith("-") or token == "-":
            parsed.positional.append(token)
            parsed.positional_indexes.append(position)
            continue
        flag, value = token, None
        if token.startswith("--") and "=" in token:
            flag, value = token.split("=", 1)
        elif not token.startswith("--") and len(token) > 2 and token[:2] in index:
            flag, value = token[:2], token[2:]
        if flag not in index:
            raise ArgvError(f"unrecognized gunicorn option {flag!r}")
        name, meta = index[flag]
        action = meta.get("action")
        if action in NO_VALUE_ACTIONS:
            parsed.values[name] = action != "store_false"
            continue
        if value is None:
            if not tokens:
                raise ArgvError(f"gunicorn option {flag!r} expects a value")
            value = tokens.pop(0)[1]
        converted = _convert(meta, value)
        if action == "append":
            parsed.values.setdefault(name, []).append(converted)
        else:
            parsed.values[name] = converted
    return parsed


def replace_app(argv: list[str], app: str) -> list[str]:
    """Return ``argv`` with its positional app spec replaced by ``app``."""
    parsed = parse_argv(argv)
    kept = [t for i, t in enumerate(argv) if i not in set(parsed.positional_indexes)]
    return [*kept, app]


@dataclass
class ConfigRead:
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    non_literal: dict[str, str] = field(default_factory=dict)
    unknown: list[tuple[str, int]] = field(default_factory=list)
    error: dict | None = None


def read_config_file(host_path: Path, display_path: str) -> ConfigRead:
    """Read top-level assignments of a gunicorn config file without running it."""
    result = ConfigRead()
    try:
        data = host_path.read_bytes()
    except FileNotFoundError:
        result.error = _error(
            "FileNotFoundError", f"{display_path} does not exist", display_path
        )
        return result
    except IsADirectoryError:
        result.error = _error(
            "IsADirectoryError", f"{display_path} is a directory", display_path
        )
        return result
    except PermissionError:
        result.error = _error(
            "PermissionError", f"{display_path} is not readable", display_path
        )
        return result
    except OSError as exc:
        result.error = _error(
            type(exc).__name__, f"{display_path}: {exc.strerror}", display_path
        )
        return result
    if b"\0" in data:
        result.error = _error(
            "BinaryFile",
            f"{display_path} is a binary file, not Python source",
            display_path,
        )
        return result
    try:
        text = data.decode("utf-8")
        tree = ast.parse(text, filename=display_path)
    except UnicodeDecodeError as exc:
        result.error = _error(
            "UnicodeDecodeError",
            f"{display_path} is not UTF-8 text (byte {exc.start})",
            display_path,
        )
        return result
    except SyntaxError as exc:
        result.error = _error("SyntaxError", exc.msg, display_path, exc.lineno)
        return result
    known = set(settings_table()["settings"])
    bound_elsewhere: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound_elsewhere.update(
                (alias.asname or alias.name).split(".")[0] for alias in node.names
            )
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound_elsewhere.add(node.name)
            if node.name in known:
                result.values[node.name] = f"<function {node.name}>"
                result.lines[node.name] = node.lineno
            continue
        for name, value_node in _assignments(node):
            result.lines[name] = node.lineno
            try:
                result.values[name] = ast.literal_eval(value_node)
                result.non_literal.pop(name, None)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                segment = ast.get_source_segment(text, value_node) or "<expression>"
                result.values[name] = None
                result.non_literal[name] = segment
    for name, line in result.lines.items():
        if (
            name not in known
            and not name.startswith("_")
            and name not in bound_elsewhere
        ):
            result.unknown.append((name, line))
    result.values = {k: v for k, v in result.values.items() if k in known}
    result.non_literal = {k: v for k, v in result.non_literal.items() if k in known}
    return result


def _assignments(node: ast.stmt):
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                yield target.id, node.value
    elif (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.value is not None
    ):
        yield node.target.id, node.value


def _error(kind: str, message: str, path: str, line: int | None = None) -> dict:
    return {
        "stage": "config",
        "type": kind,
        "message": message,
        "path": path,
        "line": line,
    }


def estimate_settings(
    argv: list[str],
    *,
    env_args: str | None,
    config_host_path: Path | None,
    config_display_path: str | None,
    config_origin: str | None,
) -> EffectiveSettings:
    """Combine defaults, config file, ``GUNICORN_CMD_ARGS`` and argv statically."""
    table = settings_table()
    values = {name: meta["default"] for name, meta in table["settings"].items()}
    sources = {name: SettingSource("default") for name in values}
    estimate = EffectiveSettings(
        values=values,
        sources=sources,
        estimated=True,
        gunicorn_version=None,
        known=frozenset(values),
        cli_flags={n: m["cli"] for n, m in table["settings"].items()},
    )
    try:
        cli = parse_argv(argv)
        env = parse_argv(shlex.split(env_args)) if env_args else ParsedArgv()
    except (ArgvError, ValueError) as exc:
        estimate.error = {"stage": "argv", "type": "ArgvError", "message": str(exc)}
        return estimate
    if config_host_path is not None:
        read = read_config_file(
            config_host_path, config_display_path or str(config_host_path)
        )
        estimate.config_file = config_display_path
        estimate.config_origin = config_origin
        if read.error:
            estimate.error = read.error
        for name, value in read.values.items():
            line = read.lines.get(name)
            sources[name] = SettingSource("config", config_display_path, line)
            if name in read.non_literal:
                values[name] = value
                continue
            try:
                values[name] = _normalize(table["settings"][name], value)
            except (TypeError, ValueError) as exc:
                values[name] = value
                if estimate.error is None:
                    estimate.error = _invalid_value(
                        name, value, exc, config_display_path, line
                    )
        estimate.non_literal.update(read.non_literal)
        estimate.unknown_names = list(read.unknown)
    for layer, kind in ((env, "env"), (cli, "cli")):
        for name, value in layer.values.items():
            values[name] = value
            sources[name] = SettingSource(kind)
            estimate.non_literal.pop(name, None)
    positional = cli.positional or env.positional
    estimate.app_uri = positional[0] if positional else values.get("wsgi_app")
    estimate.worker_class_runs = _worker_class_runs(values)
    return estimate


def _normalize(meta: dict, value: Any) -> Any:
    """Apply the conversions gunicorn's validators make that change the type.

    Raises TypeError or ValueError where gunicorn's ``validate_pos_int`` or
    ``validate_bool`` reject the value (their code is identical in gunicorn
    20.0.0 and 27.0.1). Other validators are not mirrored, so their values
    pass unchecked.
    """
    validator = meta.get("validator")
    if validator == "validate_pos_int":
        number = int(value) if isinstance(value, int) else int(value, 0)
        if number < 0:
            raise ValueError(f"Value must be positive: {number}")
        return number
    if validator == "validate_bool":
        return _to_bool(value)
    if validator in ("validate_list_string", "validate_list_of_existing_files"):
        if isinstance(value, str):
            return [value] if value else []
        if isinstance(value, tuple):
            return list(value)
    return value


def _to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TypeError(f"Invalid type for casting: {value}")
    if value.lower().strip() in ("true", "false"):
        return value.lower().strip() == "true"
    raise ValueError(f"Invalid boolean: {value}")


def _invalid_value(
    name: str, value: Any, exc: Exception, path: str | None, line: int | None
) -> dict:
    """Describe a rejected value the way the settings probe does."""
    return {
        "stage": "settings",
        "type": type(exc).__name__,
        "message": f"Invalid value for {name}: {value!r}: {exc}",
        "path": path,
        "line": line,
        "setting": name,
    }


def _worker_class_runs(values: dict[str, Any]) -> str | None:
    worker_class = values.get("worker_class")
    threads = values.get("threads")
    if not isinstance(worker_class, str):
        return None
    is_sync = worker_class == "sync" or worker_class.endswith("SyncWorker")
    if is_sync and isinstance(threads, int) and threads > 1:
        return "gthread"
    return worker_class
