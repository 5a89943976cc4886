"""Secrets never reach a report."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doctor.redact import MASK, is_secret_name, redact_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgres://app:hunter2@db.internal/x", "hunter2"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("Cookie: sessionid=s3cr3t; theme=dark", "s3cr3t"),
        ("GET /cb?token=t0k3n&page=2 HTTP/1.1", "t0k3n"),
        ("GET /x?api_key=k3y HTTP/1.1", "k3y"),
        ("SECRET_KEY=django-insecure-xyz DEBUG=1", "django-insecure-xyz"),
        ('Environment="DATABASE_PASSWORD=pa55"', "pa55"),
        ("password = 'x1y2'", "x1y2"),
    ],
)
def test_secret_removed(text, secret):
    redacted = redact_text(text)
    assert secret not in redacted
    assert MASK in redacted


@pytest.mark.parametrize(
    "text",
    [
        "workers = 4",
        "keyfile=/etc/ssl/key.pem",
        "author=someone",
        "GET /search?q=flask&page=2 HTTP/1.1",
        "bind = 127.0.0.1:8000",
    ],
)
def test_ordinary_text_kept(text):
    assert redact_text(text) == text


def test_secret_names():
    assert is_secret_name("STRIPE_API_KEY")
    assert is_secret_name("db_password")
    assert not is_secret_name("keyfile")
    assert not is_secret_name("keepalive")


@given(st.text())
def test_redaction_never_raises(text):
    assert isinstance(redact_text(text), str)
