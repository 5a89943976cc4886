"""Check that the app spec imports, the way the installed gunicorn imports it."""

from __future__ import annotations

import shlex

from doctor import Context, FactUnavailable, Location, check, error, info, ok


@check(
    "app-import",
    area="import",
    title="The app spec imports",
    needs=("app_import", "app_source", "requirements"),
)
def app_import(ctx: Context):
    """Fail when gunicorn could not load the app named by ``module:app``.

    The import runs in a child process of the venv's Python, in the service's
    working directory (gunicorn's ``chdir``), with its ``pythonpath``,
    environment (unit ``Environment``/``EnvironmentFile`` and ``raw_env``) and,
    when the doctor runs as root, as the service's user; with a timeout and a
    cap on captured output. It tells apart: a module that is not found (and
    whether ``requirements.txt`` lists it), an app module that exists but is
    not importable from the working directory, a missing attribute (listing
    the callables the module does define), an object that is not callable, a
    factory that raised, an exception at import time, and a hang.

    When the app cannot be imported for real (static mode, a venv whose
    interpreter does not run, a ``--root`` tree), the check reads the source
    instead: where the module file is, whether it defines the object, its
    syntax, and third-party imports the venv does not provide.
    """
    try:
        result = ctx.fact("app_import")
    except FactUnavailable as exc:
        yield from _static_findings(ctx, exc.reason)
        return
    spec = result.spec
    context = [
        f"app: {spec} ({result.spec_source})",
        f"working directory: {result.cwd}",
        f"run as: {result.run_as}",
    ]
    if result.timed_out:
        yield error(
            f"importing {spec} did not finish within {ctx.options.probe_timeout:g} s",
            "The import hangs: gunicorn's workers would never boot, and the"
            " master would kill them after its timeout. Module-level code that"
            " connects to a database or service, or waits on a lock, is the"
            " usual cause.",
            fix="Move connections out of module import time (into the app"
            " factory or the first request), or give them a short timeout.",
            evidence=context + _tail(result.stderr),
        )
        return
    if result.data is None:
        raise FactUnavailable(f"the import probe failed: {result.error}")
    data = result.data
    status = data.get("status")
    handler = _HANDLERS.get(status)
    if handler is None:
        raise FactUnavailable(f"the import probe returned an unknown status {status!r}")
    yield from handler(ctx, result, data, context)


def _tail(stderr: str, lines: int = 5) -> list[str]:
    return [f"stderr: {line}" for line in stderr.strip().splitlines()[-lines:]]


def _exception_evidence(data: dict) -> list[str]:
    exc = data.get("exception") or {}
    evidence = []
    if exc.get("type"):
        evidence.append(f"{exc['type']}: {exc.get('message', '')}")
    evidence += [f"  at {frame}" for frame in exc.get("frames") or []]
    return evidence


def _listed_in_requirements(ctx: Context, module: str) -> str | None:
    """Return the requirements.txt line that provides ``module``, if any."""
    try:
        requirements = ctx.fact("requirements")
    except FactUnavailable:
        return None
    wanted = module.split(".")[0].lower().replace("_", "-")
    for requirement in requirements.requirements:
        name = requirement.name.lower().replace("_", "-")
        if name in (wanted, f"python-{wanted}") or name.removeprefix("py") == wanted:
            return f"{requirement.path}:{requirement.line}: {requirement.text}"
    return None


def _ok(ctx, result, data, context):
    app_type = data.get("app_type")
    yield ok(
        f"{result.spec} imports" + (f" ({app_type})" if app_type else ""),
        evidence=context,
    )


def _module_not_found(ctx, result, data, context):
    missing = data.get("missing_module") or data.get("module")
    found = data.get("found_elsewhere") or []
    venv = ctx.fact("venv")
    if missing and missing.split(".")[0] != (data.get("module") or "").split(".")[0]:
        yield from _dependency_missing(ctx, result, data, context, missing, venv)
        return
    detail = f"Python cannot find the module {data.get('module')!r} from {result.cwd}."
    if found:
        where = found[0]
        directory = where.rsplit("/", 1)[0] if "/" in where else "."
        fix = (
            f"Point gunicorn at the directory that contains it: --chdir"
            f" {result.cwd}/{directory} (WorkingDirectory= in the unit), or"
            f" --pythonpath {directory}"
        )
        detail += f" A file that provides it exists at {', '.join(found)}."
    else:
        fix = (
            f"Check the module name in {result.spec} and that the service's"
            " WorkingDirectory is the project directory."
        )
    yield error(
        f"app module {data.get('module')!r} not found",
        detail,
        fix=fix,
        evidence=context + [data.get("message") or ""],
    )


def _dependency_missing(ctx, result, data, context, missing, venv):
    listed = _listed_in_requirements(ctx, missing)
    if listed:
        detail = (
            f"Importing {result.spec} needs the module {missing!r}; requirements.txt"
            f" lists it but it is not installed in {venv.path}."
        )
        fix = (
            f"{venv.path}/bin/pip install -r {ctx.target.chdir.value}/requirements.txt"
        )
        evidence = [listed]
    else:
        detail = (
            f"Importing {result.spec} needs the module {missing!r}, which is"
            f" neither installed in {venv.path} nor listed in requirements.txt."
        )
        fix = (
            f"Add the distribution that provides {missing!r} to requirements.txt,"
            f" then: {venv.path}/bin/pip install -r requirements.txt"
        )
        evidence = []
    yield error(
        f"the app needs module {missing!r}, which is not installed",
        detail,
        fix=fix,
        evidence=context + evidence + _exception_evidence(data),
    )


def _module_not_importable(ctx, result, data, context):
    shadow = data.get("shadowed_by")
    detail = data.get("message") or ""
    if shadow:
        detail = (
            f"The name {data.get('module')!r} resolves to {shadow}, which shadows"
            f" the module the app needs. {detail}"
        )
    yield error(
        f"app module {data.get('module')!r} exists but cannot be imported from"
        f" {result.cwd}",
        detail,
        fix="Rename the shadowing file or directory, add the missing __init__.py,"
        " or set WorkingDirectory= (gunicorn --chdir) to the project directory.",
        evidence=context + _exception_evidence(data),
    )


def _attribute_not_found(ctx, result, data, context):
    candidates = data.get("candidates") or []
    module = data.get("module")
    fix = f"Name an object the module defines, e.g. {module}:{candidates[0]}"
    if candidates and candidates[0] == "create_app":
        fix = f"Call the factory: {module}:create_app()"
    yield error(
        f"{module!r} has no attribute {data.get('object')!r}",
        (data.get("message") or "")
        + (f" The module defines: {', '.join(candidates)}." if candidates else ""),
        fix=fix if candidates else f"Define {data.get('object')} in {module}.",
        evidence=context,
    )


def _not_callable(ctx, result, data, context):
    yield error(
        f"{result.spec} is not a WSGI callable",
        data.get("message") or "",
        fix="Point gunicorn at the application object (Flask() or"
        " get_wsgi_application()), not at a module, setting or string.",
        evidence=context
        + (
            [f"callables in the module: {', '.join(data['candidates'])}"]
            if data.get("candidates")
            else []
        ),
    )


def _factory_failed(ctx, result, data, context):
    yield error(
        f"the app factory in {result.spec} raised an exception",
        data.get("message") or "",
        fix="Fix the factory: the traceback's last frames show where it failed.",
        evidence=context + _exception_evidence(data),
    )


def _import_error(ctx, result, data, context):
    missing = data.get("missing_module")
    if missing:
        yield from _dependency_missing(
            ctx, result, data, context, missing, ctx.fact("venv")
        )
        return
    exc = data.get("exception") or {}
    yield error(
        f"importing {data.get('module')!r} raised {exc.get('type', 'an exception')}",
        data.get("message") or exc.get("message") or "",
        fix="Fix the module-level code: the traceback's last frames show where"
        " it failed; gunicorn's workers exit with 'App failed to load' until then.",
        evidence=context + _exception_evidence(data),
    )


def _bad_spec(ctx, result, data, context):
    yield error(
        f"{result.spec!r} is not a valid app spec",
        data.get("message") or "",
        fix="Write it as MODULE:NAME or MODULE:FACTORY(ARGS), e.g. app:app or"
        " app:create_app()",
        evidence=context,
    )


def _gunicorn_rejects_spec(ctx, result, data, context):
    module, obj = data.get("module"), data.get("object")
    version = data.get("gunicorn_version")
    exists = data.get("app_type") is not None
    module_file = data.get("module_file") or f"{module.replace('.', '/')}.py"
    alias = (
        f"add `application = {obj}` at the end of {module_file} and start"
        f" gunicorn with {module}:application"
    )
    fix = alias[0].upper() + alias[1:]
    if _takes_only_names(version):
        detail = (
            f"gunicorn {version} takes only a name after the colon, so it looks"
            f" {obj!r} up as an attribute. Factory calls such as create_app()"
            " need gunicorn 20.0.1 or later."
        )
        if "(" in obj:
            upgrade = shlex.quote("gunicorn>=20.0.1")
            fix = (
                f"{ctx.fact('venv').path}/bin/pip install {upgrade}\n"
                f"or, to keep gunicorn {version}: {alias}"
            )
    else:
        detail = (
            f"gunicorn {version} takes only a name or a factory call after the"
            f" colon, not an attribute path like {obj!r}."
        )
    if exists:
        detail += f" The object exists ({data.get('app_type')})."
    yield error(
        f"gunicorn rejects the app spec {result.spec!r}",
        detail,
        fix=fix,
        evidence=context + [data.get("message") or ""],
    )


def _takes_only_names(version: str | None) -> bool:
    """Tell whether this gunicorn looks the object up by name only (20.0.0)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version or "") < Version("20.0.1")
    except InvalidVersion:
        return False


def _static_findings(ctx: Context, reason: str):
    source = ctx.fact("app_source")
    note = f"static analysis, the app was not imported: {reason}"
    context = [f"app: {source.spec}", f"searched: {', '.join(source.base_dirs)}", note]
    if source.spec_error:
        yield error(
            f"{source.spec!r} is not a valid app spec: {source.spec_error}",
            note,
            fix="Write it as MODULE:NAME or MODULE:FACTORY(ARGS), e.g. app:app",
            evidence=context,
        )
        return
    if source.module_path is None:
        yield _static_module_missing(source, context)
        return
    if source.syntax_error:
        message, line = source.syntax_error
        yield error(
            f"{source.module_path} cannot be parsed: {message}",
            "gunicorn's workers exit with 'App failed to load'.",
            fix=f"Fix the syntax; check with python3 -m py_compile {source.module_path}",
            evidence=context,
            location=Location(source.module_path, line),
        )
        return
    findings = _static_object_findings(source, context)
    findings += _static_import_findings(ctx, source, context)
    if findings:
        yield from findings
        return
    yield info(
        f"{source.module_path} defines {source.object_name!r}",
        f"{note}. The module was found and parsed; import-time errors cannot"
        " be seen without importing it.",
        evidence=context,
        location=Location(source.module_path, source.defined.get(source.object_name)),
    )


def _static_module_missing(source, context):
    detail = (
        f"No {source.module.replace('.', '/')}.py in {', '.join(source.base_dirs)}."
    )
    fix = "Check the module name and the service's WorkingDirectory."
    if source.found_elsewhere:
        detail += f" It exists at {', '.join(source.found_elsewhere)}."
        directory = source.found_elsewhere[0].rsplit("/", 1)[0]
        fix = (
            f"Set WorkingDirectory= (gunicorn --chdir) to"
            f" {source.base_dirs[0]}/{directory}, or add --pythonpath {directory}"
        )
    return error(
        f"app module {source.module!r} not found", detail, fix=fix, evidence=context
    )


def _static_object_findings(source, context):
    location = Location(source.module_path, None)
    if source.attribute_path:
        return [
            error(
                f"gunicorn 20+ rejects the attribute path in {source.spec!r}",
                "gunicorn takes only a name or a factory call after the colon.",
                fix=f"Add `application = {source.object}` to {source.module_path}"
                f" and use {source.module}:application",
                evidence=context,
                location=location,
            )
        ]
    if source.object_defined or source.star_import:
        return []
    candidates = ", ".join(source.callables) or "none"
    fix = f"Define {source.object_name} in {source.module_path}"
    if source.callables:
        fix = f"Use {source.module}:{source.callables[0]}"
    return [
        error(
            f"{source.module_path} defines no {source.object_name!r}",
            f'gunicorn will fail with "Failed to find attribute'
            f' {source.object_name!r} in {source.module!r}." Callables defined'
            f" at the top level: {candidates}.",
            fix=fix,
            evidence=context,
            location=location,
        )
    ]


def _static_import_findings(ctx: Context, source, context):
    findings = []
    venv = ctx.fact("venv")
    for name, line in source.missing_imports:
        listed = _listed_in_requirements(ctx, name)
        if listed:
            detail = "requirements.txt lists it, but it is not installed."
            fix = f"{venv.path}/bin/pip install -r requirements.txt"
        else:
            detail = "requirements.txt does not list it either."
            fix = f"Add {name}'s distribution to requirements.txt and install it"
        findings.append(
            error(
                f"{source.module_path} imports {name!r}, which the venv does not provide",
                f"The import fails with ModuleNotFoundError: No module named {name!r}."
                f" {detail}",
                fix=fix,
                evidence=context + ([listed] if listed else []),
                location=Location(source.module_path, line),
            )
        )
    return findings


_HANDLERS = {
    "ok": _ok,
    "module_not_found": _module_not_found,
    "module_not_importable": _module_not_importable,
    "attribute_not_found": _attribute_not_found,
    "not_callable": _not_callable,
    "factory_failed": _factory_failed,
    "import_error": _import_error,
    "bad_spec": _bad_spec,
    "gunicorn_rejects_spec": _gunicorn_rejects_spec,
}
