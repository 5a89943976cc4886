"""The HTTP half of the upstream probe: one request over a connected socket.

``doctor.upstream`` connects to the address itself and imports this module,
and with it requests, only when the connection succeeds. ``exchange`` sends
the ``GET`` through requests and urllib3 and classifies the response or the
failure, in the terms nginx uses in its error log.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import HTTPError, NewConnectionError

from doctor import __version__
from doctor.upstream import (
    EVIDENCE_BYTES,
    MAX_HEADER_LINE,
    UNIX_HOST_HEADER,
    Address,
    Outcome,
    os_error_outcome,
)


def exchange(
    address: Address,
    connected: socket.socket,
    *,
    where: str,
    connect_host: str | None,
    host_header: str | None,
    path: str,
    connect_timeout: float,
    read_timeout: float,
    buffer_size: int | None,
    slow_after: float | None,
    started: float,
) -> Outcome:
    """Send the ``GET`` over ``connected`` and classify what comes back.

    ``started`` is the ``time.monotonic()`` of the connect() call, so that
    the elapsed time covers the connection as nginx's timers do. The socket
    is closed before this returns.
    """
    request = _build_request(address, connect_host, host_header, path)
    adapter = _ProbeAdapter(address, connect_host, connected)
    try:
        # The adapter sends exactly one request and returns once the headers
        # are parsed. Session.send(allow_redirects=False) would also read the
        # body of a 3xx to prepare Response.next, so it is not used.
        response = adapter.send(
            request, stream=True, timeout=(connect_timeout, read_timeout)
        )
    except (
        requests.RequestException,
        HTTPError,
        OSError,
        http.client.HTTPException,
    ) as exc:
        elapsed = time.monotonic() - started
        adapter.close()
        connected.close()
        return _classify_failure(address, where, exc, elapsed, read_timeout)
    elapsed = time.monotonic() - started
    try:
        return _classify_response(
            address, where, response, elapsed, buffer_size, slow_after
        )
    finally:
        response.close()
        adapter.close()
        connected.close()


def _build_request(
    address: Address, connect_host: str | None, host_header: str | None, path: str
) -> requests.PreparedRequest:
    if address.kind == "unix":
        # The URL host is never resolved: the adapter connects to the socket.
        url = f"http://{UNIX_HOST_HEADER}{path}"
        default_host = UNIX_HOST_HEADER
    else:
        literal = f"[{connect_host}]" if ":" in connect_host else connect_host
        url = f"http://{literal}:{address.port}{path}"
        default_host = address.describe()
        if address.port == 80:
            default_host = default_host.rsplit(":", 1)[0]
    headers = {
        "Host": host_header or default_host,
        "Connection": "close",
        "User-Agent": f"gunicorn-doctor/{__version__}",
        "Accept": "*/*",
    }
    return requests.Request("GET", url, headers=headers).prepare()


class _CountingReader:
    """Wrap a response's file object and count the bytes ``readline`` returns."""

    def __init__(self, raw):
        self.raw = raw
        self.count = 0
        self.first_line: bytes | None = None
        self.last_line: bytes | None = None

    def readline(self, limit: int = -1) -> bytes:
        line = self.raw.readline(limit)
        self.count += len(line)
        if self.first_line is None:
            self.first_line = line
        self.last_line = line
        return line

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


class _MeasuredResponse(http.client.HTTPResponse):
    """An http.client response that records its raw status line and header size.

    ``begin`` reads the status line and headers with ``fp.readline`` only, so
    counting those calls measures the header block as nginx buffers it.
    http.client takes the end of the stream as the end of the headers, so
    ``headers_complete`` records whether the blank line arrived.
    """

    status_line: str | None = None
    header_bytes: int | None = None
    headers_complete: bool | None = None

    def begin(self) -> None:
        reader = _CountingReader(self.fp)
        self.fp = reader
        try:
            super().begin()
        finally:
            if self.fp is reader:
                self.fp = reader.raw
            self.header_bytes = reader.count
            self.headers_complete = reader.last_line in (b"\r\n", b"\n")
            if reader.first_line is not None:
                self.status_line = reader.first_line.decode("iso-8859-1").strip()


class _ProbeConnection(HTTPConnection):
    """A urllib3 connection that measures headers and uses a connected socket.

    The probe connects first, with the socket module alone, so that an
    address with no listener is classified without importing requests.
    The pool hands that socket to its one connection, which never connects
    again.
    """

    response_class = _MeasuredResponse
    connected: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock, self.connected = self.connected, None
        if sock is None:
            raise NewConnectionError(self, "the probe's connection was already used")
        return sock


class _ProbePool(HTTPConnectionPool):
    ConnectionCls = _ProbeConnection

    def __init__(self, host: str, port: int | None, connected: socket.socket):
        super().__init__(host, port, maxsize=1)
        self.connected = connected

    def _new_conn(self) -> _ProbeConnection:
        connection = super()._new_conn()
        connection.connected, self.connected = self.connected, None
        return connection


class _ProbeAdapter(HTTPAdapter):
    """A requests adapter that sends every request through one probe pool.

    requests has no unix socket transport, and its own pools use urllib3's
    plain connection, which keeps no header size. The pool ignores proxies
    and the environment, so the request goes to the probed address only.
    """

    def __init__(
        self, address: Address, connect_host: str | None, connected: socket.socket
    ):
        super().__init__()
        if address.kind == "unix":
            self.pool = _ProbePool(UNIX_HOST_HEADER, None, connected)
        else:
            self.pool = _ProbePool(connect_host, address.port, connected)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self.pool

    def get_connection(self, url, proxies=None):
        return self.pool

    def close(self) -> None:
        self.pool.close()
        super().close()


def _classify_response(
    address: Address,
    where: str,
    response: requests.Response,
    elapsed: float,
    buffer_size: int | None,
    slow_after: float | None,
) -> Outcome:
    # requests reads the same attribute to extract cookies.
    original = getattr(response.raw, "_original_response", None)
    header_bytes = getattr(original, "header_bytes", None)
    status = response.status_code
    status_line = getattr(original, "status_line", None) or (
        f"{status} {response.reason}"
    )
    evidence = [status_line, f"response status line and headers: {header_bytes} bytes"]
    location = response.headers.get("Location")
    if 300 <= status < 400 and location:
        evidence.append(f"Location: {location}")

    verdict, detail = _response_verdict(
        where,
        status_line,
        status,
        elapsed,
        header_bytes,
        getattr(original, "headers_complete", True),
        location,
        buffer_size,
        slow_after,
    )
    return Outcome(address, verdict, status, elapsed, header_bytes, detail, evidence)


def _response_verdict(
    where: str,
    status_line: str,
    status: int,
    elapsed: float,
    header_bytes: int | None,
    headers_complete: bool,
    location: str | None,
    buffer_size: int | None,
    slow_after: float | None,
) -> tuple[str, str]:
    """Return the verdict and detail for a response, the worst problem first."""
    if not headers_complete:
        return "closed", (
            f"{where} closed the connection in the middle of the response headers,"
            " so the worker died or closed mid-request. nginx logs 'upstream"
            " prematurely closed connection while reading response header from"
            " upstream' and returns 502."
        )
    returned = f"{where} returned {status_line!r} in {elapsed:.3f} s"
    if buffer_size is not None and (header_bytes or 0) > buffer_size:
        return "headers_too_big", (
            f"{returned} with {header_bytes} bytes of status line and headers,"
            f" more than proxy_buffer_size {buffer_size}. nginx logs 'upstream"
            " sent too big header while reading response header from upstream'"
            " and returns 502."
        )
    if status >= 500:
        return "http_5xx", (
            f"{returned}, a server error from the application or gunicorn."
            " nginx passes it on to the client unless proxy_intercept_errors"
            " is on."
        )
    if slow_after is not None and elapsed > slow_after:
        return "slow", (
            f"{returned}, later than the {slow_after:g} s limit, past which"
            " nginx's proxy_read_timeout or gunicorn's worker timeout can end"
            " the request."
        )
    if 300 <= status < 400 and location:
        return "ok", f"{returned}, and the redirect to {location} was not followed."
    return "ok", f"{returned}."


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and every exception it wraps, first the outermost.

    requests and urllib3 wrap the socket error in ``reason``, in ``args`` or
    as ``__cause__``, depending on where it happened.
    """
    pending = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [getattr(current, "reason", None), current.__cause__]
        inner += [arg for arg in current.args if isinstance(arg, BaseException)]
        inner.append(current.__context__)
        pending.extend(e for e in inner if isinstance(e, BaseException))


def _classify_failure(
    address: Address,
    where: str,
    exc: Exception,
    elapsed: float,
    read_timeout: float,
) -> Outcome:
    chain = list(_exception_chain(exc))

    def outcome(verdict: str, detail: str, evidence: str) -> Outcome:
        return Outcome(address, verdict, None, elapsed, None, detail, [evidence])

    if isinstance(exc, requests.ReadTimeout):
        return outcome(
            "no_response",
            f"{where} accepted the connection but sent no complete response headers"
            f" within {read_timeout:g} s, so all workers are busy or hung. nginx logs"
            " 'upstream timed out (110: Connection timed out) while reading"
            " response header from upstream' and returns 504.",
            f"recv() from {where}: timed out after {read_timeout:g} s",
        )
    for error in chain:
        if isinstance(error, http.client.RemoteDisconnected):
            return outcome(
                "closed",
                f"{where} closed the connection without sending a response, so the"
                " worker died or closed mid-request. nginx logs 'upstream"
                " prematurely closed connection while reading response header"
                " from upstream' and returns 502.",
                f"recv() from {where}: connection closed before any response",
            )
    for error in chain:
        if _is_header_limit(error):
            return outcome(
                "headers_too_big",
                f"{where} sent a header line longer than {MAX_HEADER_LINE} bytes"
                " or more than 100 header lines, which is more than the probe"
                " reads. Headers this big exceed nginx's default proxy_buffer_size"
                " of 4k or 8k, and then nginx logs 'upstream sent too big header'"
                " and returns 502.",
                f"response from {where}: {error}",
            )
    for error in chain:
        if isinstance(error, http.client.BadStatusLine | http.client.UnknownProtocol):
            return _not_http(address, where, error, elapsed)
    for error in chain:
        if isinstance(error, OSError) and error.errno is not None:
            return os_error_outcome(address, where, error, False, elapsed)
    return outcome(
        "error",
        f"The probe of {where} failed: {exc}.",
        f"{type(exc).__name__}: {exc}",
    )


def _is_header_limit(error: BaseException) -> bool:
    if isinstance(error, http.client.LineTooLong):
        return True
    return isinstance(error, http.client.HTTPException) and str(error).startswith(
        "got more than"
    )


def _not_http(
    address: Address, where: str, error: BaseException, elapsed: float
) -> Outcome:
    sample = str(error.args[0]) if error.args else ""
    # ngx_http_proxy_process_status_line (ngx_http_proxy_module.c) passes
    # such bytes on as an HTTP/0.9 response with status 200, not as a 502.
    detail = (
        f"{where} sent bytes that are not an HTTP/1.x response. nginx"
        " logs 'upstream sent no valid HTTP/1.0 header' and passes the bytes on"
        " without a status line, as an HTTP/0.9 response. curl 7.66 and later"
        " rejects that with 'Received HTTP/0.9 when not allowed'."
    )
    # A TLS alert or handshake record starts with 0x15 or 0x16, then 0x03.
    if sample[:2] in ("\x15\x03", "\x16\x03"):
        detail += (
            " The bytes look like TLS, so gunicorn serves HTTPS (certfile and"
            " keyfile are set) while the request was plain HTTP."
        )
    return Outcome(
        address,
        "not_http",
        None,
        elapsed,
        None,
        detail,
        [f"first line from {where}: {sample[:EVIDENCE_BYTES]!r}"],
    )
