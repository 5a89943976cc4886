"""Remove secrets from every string the doctor shows or writes.

Covers passwords inside URLs, ``Authorization`` and cookie headers,
query-string values of token/key/password/secret parameters, and the values
of environment-style assignments whose names suggest a secret.
"""

from __future__ import annotations

import re
from dataclasses import replace

from doctor.findings import Finding

MASK = "[redacted]"

SECRET_WORDS = frozenset(
    [
        "secret",
        "token",
        "password",
        "passwd",
        "pwd",
        "pass",
        "key",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "cookie",
        "session",
        "sessionid",
        "dsn",
        "signature",
        "salt",
        "private",
        "jwt",
    ]
)
SECRET_FRAGMENTS = ("password", "passwd", "secret", "token", "apikey", "credential")


def is_secret_name(name: str) -> bool:
    """Tell whether a variable or parameter name suggests its value is a secret."""
    lowered = name.lower()
    if any(fragment in lowered for fragment in SECRET_FRAGMENTS):
        return True
    words = re.split(r"[_\-.]", lowered)
    # "KEY" alone is how messages name the left side of KEY=VALUE; a secret
    # key is named with another word, as in SECRET_KEY or API_KEY.
    if words == ["key"]:
        return False
    return any(word in SECRET_WORDS for word in words)


_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)", re.IGNORECASE
)
_HEADER = re.compile(
    r"(?i)\b(?P<name>authorization|proxy-authorization|cookie|set-cookie|x-api-key)"
    r"(?P<sep>\s*[:=]\s*)(?P<value>\"[^\"]*\"|[^\r\n,]+)"
)
_QUERY = re.compile(
    r"(?i)(?P<head>[?&;](?P<name>[\w.-]*(token|key|password|passwd|secret|signature|auth)"
    r"[\w.-]*)=)(?P<value>[^&\s\"']*)"
)
_ASSIGNMENT = re.compile(
    r"(?P<head>\b(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)


def redact_text(text: str) -> str:
    """Return ``text`` with every recognised secret replaced by a mask."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _HEADER.sub(lambda m: m["name"] + m["sep"] + MASK, text)
    text = _QUERY.sub(lambda m: m["head"] + MASK, text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def _mask_assignment(match: re.Match) -> str:
    value = match["value"]
    if is_secret_name(match["name"]) and not value.startswith(MASK):
        return match["head"] + MASK
    if len(value) > 1 and value[0] in "\"'" and value[-1] == value[0]:
        # A quoted value can hold assignments of its own, as in systemd's
        # Environment="DATABASE_PASSWORD=...".
        return match["head"] + value[0] + redact_text(value[1:-1]) + value[-1]
    return match[0]


def redact_value(value):
    """Redact strings inside nested lists and dicts; other values pass through."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {
            k: (
                MASK
                if isinstance(k, str) and is_secret_name(k) and v
                else redact_value(v)
            )
            for k, v in value.items()
        }
    return value


def redact_finding(finding: Finding) -> Finding:
    return replace(
        finding,
        title=redact_text(finding.title),
        detail=redact_text(finding.detail),
        fix=redact_text(finding.fix) if finding.fix else finding.fix,
        evidence=[redact_text(line) for line in finding.evidence],
    )
