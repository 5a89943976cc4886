"""Checks of nginx's configuration against the gunicorn it fronts."""

from __future__ import annotations

from doctor import Context, FactUnavailable, Location, check, error, info, ok, warning
from doctor.addresses import (
    bind_covers,
    bind_serves,
    gunicorn_address,
    resolve_loopback_name,
    tcp_and_unix_binds,
)


@check(
    "nginx-config",
    area="nginx",
    title="nginx's configuration parses",
    needs=("nginx",),
)
def nginx_config(ctx: Context):
    """Fail when nginx's configuration, or a file it includes, does not parse.

    The doctor reads nginx's files with crossplane, the parser nginx's
    maintainers publish, following ``include`` lines. A file that does not
    parse stops ``nginx -t`` and a reload; the checks that compare nginx
    with gunicorn report ``skipped`` instead of guessing.
    """
    config = ctx.fact("nginx")
    if config.errors:
        for path, line, message in config.errors:
            yield error(
                f"{path}{f':{line}' if line else ''}: {message}",
                "nginx refuses a configuration with this error: `nginx -t` fails"
                " and a reload keeps the old configuration.",
                fix="Fix the line, then check with: nginx -t",
                location=Location(path, line),
            )
        return
    yield ok(
        f"nginx's configuration parses ({len(config.files)} files from"
        f" {config.main_file})",
        f"found via {config.source}",
        evidence=config.files,
    )


@check(
    "nginx-upstream",
    area="upstream",
    title="nginx connects to where gunicorn listens",
    needs=("nginx", "settings"),
)
def nginx_upstream(ctx: Context):
    """Fail when nginx forwards to an address gunicorn does not bind.

    Compares every ``proxy_pass``/``uwsgi_pass``/``fastcgi_pass`` target
    (``upstream`` blocks expanded to their servers) with gunicorn's ``bind``:
    host, port, address family (``localhost`` resolves to both ``::1`` and
    ``127.0.0.1``, and nginx tries each) and unix socket path. nginx answers
    502 for every request that reaches a target nobody serves. ``uwsgi_pass``
    or ``fastcgi_pass`` to gunicorn is a protocol mismatch unless gunicorn
    speaks uwsgi (its ``protocol`` setting, gunicorn 24 and later).
    """
    config = ctx.fact("nginx")
    if config.errors:
        raise FactUnavailable("nginx's configuration does not parse")
    settings = ctx.fact("settings")
    binds = tcp_and_unix_binds(settings)
    if not binds:
        raise FactUnavailable(
            "gunicorn binds only inherited fds (fd://), not addresses"
        )
    targets = [t for t in config.proxy_targets if t.kind != "variable"]
    variables = [t for t in config.proxy_targets if t.kind == "variable"]
    bind_text = ", ".join(b[0] for b in binds)
    matching = [t for t in targets if any(bind_serves(b, t, ctx) for b in binds)]
    findings = []
    for target in matching:
        findings += _protocol_findings(target, settings)
        findings += _family_findings(ctx, target, binds)
    if not matching:
        findings.append(
            _mismatch(targets, variables, bind_text, settings, config.main_file)
        )
    for target in variables:
        findings.append(
            info(
                f"{target.text} uses a variable that cannot be resolved statically",
                "The doctor cannot tell where these requests go until nginx"
                " evaluates the variable at run time.",
                evidence=[target.text],
                location=target.location,
            )
        )
    if findings:
        yield from findings
        return
    served = ", ".join(sorted({t.describe() for t in matching}))
    yield ok(
        f"nginx forwards to {served}, where gunicorn listens ({bind_text})",
        evidence=[f"{t.location}: {t.text}" for t in matching],
    )


def _mismatch(targets, variables, bind_text, settings, config_file):
    if not targets:
        # An nginx that proxies nowhere is most likely not this app's front
        # end (a default site, another role of the host): worth a note only.
        return info(
            f"nginx's configuration ({config_file}) proxies to nothing, so it"
            " does not front this deployment",
            "No proxy_pass, uwsgi_pass or fastcgi_pass names an address"
            + (" other than through a variable." if variables else "."),
            fix=f"location / {{ proxy_pass http://{_nginx_address(bind_text)}; }}",
        )
    described = ", ".join(sorted({t.describe() for t in targets}))
    first = targets[0]
    return error(
        f"nginx connects to {described} but gunicorn listens on {bind_text}",
        "Every request nginx forwards there fails with 502 Bad Gateway (nginx"
        " logs 'connect() failed (111: Connection refused)' or, for a unix"
        " socket, '(2: No such file or directory)').",
        fix=(
            f"Point {first.directive} at gunicorn ({first.location}), or change"
            f" gunicorn's bind to {first.describe()}"
        ),
        evidence=[f"{t.location}: {t.text}" for t in targets]
        + [settings.describe("bind")],
        location=first.location,
    )


def _nginx_address(bind_text: str) -> str:
    """Write gunicorn's first bind the way proxy_pass names it after http://.

    A wildcard host becomes loopback, and a unix socket keeps nginx's
    ``unix:`` prefix (``proxy_pass http://unix:/run/app.sock;``).
    """
    from doctor.upstream import parse_bind

    first = bind_text.split(", ")[0]
    try:
        address = parse_bind(first)
    except ValueError:
        return first
    return first if address is None else address.describe()


def _protocol_findings(target, settings):
    if target.directive == "proxy_pass":
        return []
    protocol = settings.get("protocol")
    if target.directive == "uwsgi_pass" and protocol == "uwsgi":
        return []
    speaks = f"protocol = {protocol!r}" if protocol else "HTTP only"
    return [
        error(
            f"nginx uses {target.directive} to gunicorn, which speaks {speaks}",
            f"gunicorn does not understand {target.directive.split('_')[0]}"
            " requests; nginx answers 502 ('upstream sent invalid header' or"
            " 'upstream prematurely closed connection').",
            fix=f"proxy_pass http://{target.describe()};  (with the proxy_set_header"
            ' lines), or, with gunicorn 24+ and uwsgi_pass: protocol = "uwsgi"',
            evidence=[f"{target.location}: {target.text}", settings.describe("bind")],
            location=target.location,
        )
    ]


def _family_findings(ctx: Context, target, binds):
    if target.kind != "tcp":
        return []
    resolved = resolve_loopback_name(ctx, target.host)
    if len(resolved) < 2:
        return []
    binds = [
        (b[0], gunicorn_address(ctx, b[1]), b[2], b[3]) if b[1] else b for b in binds
    ]
    served = {a for a in resolved if any(bind_covers(b, a, target.port) for b in binds)}
    missing = sorted(resolved - served)
    if not missing:
        return []
    return [
        warning(
            f"{target.host} resolves to {', '.join(sorted(resolved))}, but gunicorn"
            f" listens only on {', '.join(sorted(served))}",
            f"nginx tries each address of {target.host}; the connection to"
            f" {', '.join(missing)} is refused, logged as an error, and counts"
            " against the server's max_fails.",
            fix=f"proxy_pass http://{min(served)}:{target.port};",
            evidence=[f"{target.location}: {target.text}"],
            location=target.location,
        )
    ]
