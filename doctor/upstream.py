"""Send one HTTP request to a gunicorn bind the way nginx's proxy_pass would.

``probe`` connects to a TCP address or a unix socket, sends a single
``GET`` with ``Connection: close`` and classifies what happens, in the terms
nginx uses in its error log when it returns 502 or 504. It reads the status
line and headers only, never the body, and never follows a redirect.

Only this host is probed: a TCP address must be a loopback address, or a name
that ``/etc/hosts`` maps only to loopback addresses. Names are not resolved
through DNS, so that no query leaves the host either.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import math
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from doctor import __version__

# Gunicorn's port when a bind names only a host (``gunicorn.util.parse_address``).
DEFAULT_PORT = 8000
HOSTS_FILE = "/etc/hosts"
# Verdicts of ``probe``. "backlog_full" is a unix socket whose listen queue is
# full, "connect_failed" any other connect() error (EADDRNOTAVAIL, ...) and
# "error" any other failure.
VERDICTS = (
    "ok",
    "refused",
    "socket_missing",
    "permission_denied",
    "connect_timeout",
    "backlog_full",
    "no_response",
    "reset",
    "closed",
    "http_5xx",
    "headers_too_big",
    "slow",
    "not_http",
    "connect_failed",
    "error",
    "not_probed",
)
# A gunicorn bind of a wildcard address also listens on loopback, which is
# where the doctor connects.
WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
# Host header nginx sends to a unix-socket upstream (ngx_http_proxy_set_vars
# in nginx's src/http/modules/ngx_http_proxy_module.c).
UNIX_HOST_HEADER = "localhost"
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
# http.client reads at most this many bytes per status or header line.
MAX_HEADER_LINE = 65536
EVIDENCE_BYTES = 80


@dataclass(frozen=True)
class Address:
    """A socket to connect to: a TCP host and port, or a unix socket path."""

    kind: str  # "tcp" or "unix"
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def describe(self) -> str:
        """Format the address as nginx writes it in proxy_pass and its logs."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class Outcome:
    """The result of one probe of an address, with a verdict from ``VERDICTS``."""

    address: Address
    verdict: str
    status: int | None
    elapsed: float | None  # seconds from connect() to the headers or the failure
    header_bytes: int | None  # status line, header lines and the blank line
    detail: str
    evidence: list[str] = field(default_factory=list)


def parse_bind(bind: str) -> Address | None:
    """Parse a gunicorn ``bind`` value into the address to connect to.

    Accepts the forms gunicorn accepts: ``HOST:PORT``, ``[IPV6]:PORT``, a bare
    host (port 8000), ``tcp://...``, ``unix:PATH`` and ``unix://PATH``. A
    wildcard host (``0.0.0.0``, ``::`` or empty) becomes the loopback address
    of its family. Returns None for ``fd://N``, a socket inherited from the
    parent process that has no address to connect to.

    Raises ValueError naming the bind when it is not valid.
    """
    text = bind.strip()
    if re.match(r"unix:(//)?", text):
        path = re.split(r"unix:(//)?", text)[-1]
        if not path:
            raise ValueError(
                f"invalid bind {bind!r}: the unix socket path is empty;"
                " use unix:/run/app.sock"
            )
        return Address("unix", path=path)
    if text.startswith("fd://"):
        if not text[5:].isdigit():
            raise ValueError(
                f"invalid bind {bind!r}: {text[5:]!r} is not a file descriptor"
                " number; use fd://3"
            )
        return None
    text = text.removeprefix("tcp://")
    host, port_text = _split_bind(bind, text)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(
            f"invalid bind {bind!r}: port {port_text!r} is not a number from 1"
            " to 65535; use HOST:PORT, [IPV6]:PORT or unix:PATH"
        )
    host = host.lower()
    return Address("tcp", host=WILDCARD_HOSTS.get(host, host), port=int(port_text))


def _split_bind(bind: str, text: str) -> tuple[str, str]:
    """Split a TCP bind into host and port text as gunicorn does."""
    if "[" in text and "]" in text:
        host = text.split("]")[0][1:]
        return host, (text.split("]:") + [str(DEFAULT_PORT)])[1]
    if text.count(":") > 1:
        raise ValueError(
            f"invalid bind {bind!r}: an IPv6 address needs brackets; use [::1]:8000"
        )
    if ":" in text:
        host, port_text = text.split(":")
        return host, port_text
    return text, str(DEFAULT_PORT)


def parse_size(text: str) -> int | None:
    """Parse an nginx size such as ``4k``, ``8K``, ``1m`` or ``512`` into bytes.

    Returns None when ``text`` is not a size nginx accepts for
    ``proxy_buffer_size`` (digits with an optional k or m suffix).
    """
    match = re.fullmatch(r"(\d+)([kKmM]?)", text.strip())
    if match is None:
        return None
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


def is_loopback(address: Address) -> bool:
    """Return whether connecting to ``address`` stays on this host.

    True for unix sockets, for addresses in 127.0.0.0/8 or ``::1`` (also
    IPv4-mapped), and for names that /etc/hosts maps only to such addresses.
    ``localhost`` and names under ``.localhost`` count even when /etc/hosts
    lacks them, because RFC 6761 reserves them for loopback.
    """
    if address.kind == "unix":
        return bool(address.path)
    return _loopback_ip(address.host) is not None


def _loopback_ip(host: str | None) -> str | None:
    """Return the loopback IP to connect to for ``host``, or None."""
    if not host:
        return None
    literal = _ip_address(host)
    if literal is not None:
        return host if _is_loopback_ip(literal) else None
    name = host.lower().rstrip(".")
    addresses = _hosts_file_addresses(name)
    if not addresses and (name == "localhost" or name.endswith(".localhost")):
        addresses = [ipaddress.IPv4Address("127.0.0.1")]
    if not addresses or not all(_is_loopback_ip(ip) for ip in addresses):
        return None
    # Gunicorn binds a named host with an AF_INET socket, so IPv4 comes first.
    ipv4 = [ip for ip in addresses if ip.version == 4]
    return str((ipv4 or addresses)[0])


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _hosts_file_addresses(
    name: str,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Return the addresses that /etc/hosts lists for ``name``."""
    try:
        with open(HOSTS_FILE, encoding="utf-8", errors="replace") as hosts:
            lines = hosts.readlines()
    except OSError:
        return []
    addresses = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or name not in (word.lower() for word in words[1:]):
            continue
        ip = _ip_address(words[0])
        if ip is not None:
            addresses.append(ip)
    return addresses


def probe(
    address: Address,
    *,
    host_header: str | None = None,
    path: str = "/",
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
    buffer_size: int | None = None,
    slow_after: float | None = None,
) -> Outcome:
    """Send one ``GET`` to ``address`` and classify the response or failure.

    ``host_header`` defaults to what nginx sends by default: the address for
    TCP and ``localhost`` for a unix socket. ``connect_timeout`` bounds
    connect(), and ``read_timeout`` bounds each wait for data of the status
    line and headers, as nginx's proxy_read_timeout does. ``buffer_size`` is
    nginx's proxy_buffer_size in bytes: larger headers give "headers_too_big".
    ``slow_after`` is in seconds: headers that arrive later give "slow".

    An address that is not on this host gives "not_probed" without any
    connection or name lookup. There are no retries. Raises ValueError on an
    invalid argument.
    """
    _validate_address(address)
    _validate_request(host_header, path)
    _validate_limits(connect_timeout, read_timeout, buffer_size, slow_after)
    connect_host = None if address.kind == "unix" else _loopback_ip(address.host)
    if address.kind == "tcp" and connect_host is None:
        return Outcome(
            address,
            "not_probed",
            None,
            None,
            None,
            f"{address.describe()} is not a loopback address, a name that"
            f" {HOSTS_FILE} maps to loopback, or a unix socket. The doctor probes"
            " only this host, so it made no connection.",
        )
    where = address.describe()
    if connect_host is not None and connect_host != address.host:
        where = f"{where} ({connect_host})"
    request = _build_request(address, connect_host, host_header, path)
    adapter = _ProbeAdapter(address, connect_host)
    started = time.monotonic()
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
        return _classify_failure(
            address, where, exc, elapsed, connect_timeout, read_timeout
        )
    elapsed = time.monotonic() - started
    try:
        return _classify_response(
            address, where, response, elapsed, buffer_size, slow_after
        )
    finally:
        response.close()
        adapter.close()


def _validate_address(address: Address) -> None:
    if address.kind == "unix":
        if not address.path:
            raise ValueError(
                f"invalid address {address!r}: a unix address needs a socket path"
            )
        return
    if address.kind != "tcp":
        raise ValueError(f"invalid address kind {address.kind!r}: use 'tcp' or 'unix'")
    port = address.port
    if not address.host or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(
            f"invalid address {address!r}: a tcp address needs a host and a port"
            " from 1 to 65535"
        )


def _validate_request(host_header: str | None, path: str) -> None:
    if host_header is not None and not re.fullmatch(r"[!-~]+", host_header):
        raise ValueError(
            f"invalid Host header {host_header!r}: use non-empty printable ASCII"
            " without spaces, such as example.com"
        )
    if not re.fullmatch(r"/[!-~]*", path):
        raise ValueError(
            f"invalid request path {path!r}: it must start with '/' and contain"
            " no spaces or control characters"
        )


def _validate_limits(
    connect_timeout: float,
    read_timeout: float,
    buffer_size: int | None,
    slow_after: float | None,
) -> None:
    for name, value in (
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
        ("slow_after", slow_after),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"invalid {name} {value!r}: use a number of seconds > 0")
    if buffer_size is not None and not (
        isinstance(buffer_size, int) and buffer_size > 0
    ):
        raise ValueError(
            f"invalid buffer_size {buffer_size!r}: use a number of bytes > 0, such"
            " as parse_size('4k')"
        )


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
    """A urllib3 connection that measures headers and can use a unix socket."""

    response_class = _MeasuredResponse
    unix_path: str | None = None

    def _new_conn(self) -> socket.socket:
        if self.unix_path is None:
            return super()._new_conn()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        # Raise urllib3's exceptions, as its TCP connect does, so that requests
        # reports a connect timeout as ConnectTimeout and not as a read error.
        try:
            sock.connect(self.unix_path)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(
                self, f"Connection to unix:{self.unix_path} timed out."
            ) from exc
        except OSError as exc:
            sock.close()
            raise NewConnectionError(
                self, f"Failed to establish a new connection: {exc}"
            ) from exc
        return sock


class _ProbePool(HTTPConnectionPool):
    ConnectionCls = _ProbeConnection

    def __init__(self, host: str, port: int | None, unix_path: str | None):
        super().__init__(host, port, maxsize=1)
        self.unix_path = unix_path

    def _new_conn(self) -> _ProbeConnection:
        connection = super()._new_conn()
        connection.unix_path = self.unix_path
        return connection


class _ProbeAdapter(HTTPAdapter):
    """A requests adapter that sends every request through one probe pool.

    requests has no unix socket transport, and its own pools use urllib3's
    plain connection, which keeps no header size. The pool ignores proxies
    and the environment, so the request goes to the probed address only.
    """

    def __init__(self, address: Address, connect_host: str | None):
        super().__init__()
        if address.kind == "unix":
            self.pool = _ProbePool(UNIX_HOST_HEADER, None, address.path)
        else:
            self.pool = _ProbePool(connect_host, address.port, None)

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
    connect_timeout: float,
    read_timeout: float,
) -> Outcome:
    chain = list(_exception_chain(exc))
    during_connect = any(isinstance(e, NewConnectionError) for e in chain)

    def outcome(verdict: str, detail: str, evidence: str) -> Outcome:
        return Outcome(address, verdict, None, elapsed, None, detail, [evidence])

    if isinstance(exc, requests.ConnectTimeout):
        return outcome(
            "connect_timeout",
            f"connect() to {where} did not complete within {connect_timeout:g} s,"
            " so the listen backlog is full or a firewall drops the packets. nginx"
            " logs 'upstream timed out (110: Connection timed out) while"
            " connecting to upstream' and returns 504.",
            f"connect() to {where}: timed out after {connect_timeout:g} s",
        )
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
            return _classify_os_error(address, where, error, during_connect, elapsed)
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


def _classify_os_error(
    address: Address,
    where: str,
    error: OSError,
    during_connect: bool,
    elapsed: float,
) -> Outcome:
    call = f"connect() to {where}" if during_connect else f"recv() from {where}"
    evidence = [f"{call}: {error}"]
    code = error.errno
    if code == errno.ECONNREFUSED:
        if address.kind == "unix":
            detail = (
                f"The socket file {address.path} exists but no process accepts"
                " connections on it, as a stopped gunicorn leaves it. nginx logs"
                f" 'connect() to unix:{address.path} failed (111: Connection"
                " refused) while connecting to upstream' and returns 502."
            )
        else:
            detail = (
                f"Nothing listens on {where}: connect() was refused. nginx logs"
                " 'connect() failed (111: Connection refused) while connecting to"
                " upstream' and returns 502."
            )
        verdict = "refused"
    elif code == errno.ENOENT and address.kind == "unix":
        verdict = "socket_missing"
        detail = (
            f"The socket file {address.path} does not exist, so gunicorn is not"
            " running with this bind or creates its socket elsewhere, for example"
            " in a private /tmp. nginx logs '(2: No such file or directory) while"
            " connecting to upstream'."
        )
    elif code in (errno.EACCES, errno.EPERM):
        verdict = "permission_denied"
        detail = f"{call} was denied."
        if address.kind == "tcp":
            detail += (
                " On loopback that is a local firewall rule or a security module"
                " such as SELinux rejecting the connection."
            )
        else:
            detail += (
                " The probing user lacks search permission on a directory above"
                f" {address.path} or write permission on the socket. nginx's worker"
                " user hits the same with '(13: Permission denied) while connecting"
                " to upstream'."
            )
    elif code == errno.ECONNRESET:
        verdict = "reset"
        detail = (
            f"{where} reset the connection before sending a response. nginx logs"
            " 'recv() failed (104: Connection reset by peer) while reading"
            " response header from upstream' and returns 502."
        )
    elif code == errno.EPIPE:
        verdict = "closed"
        detail = (
            f"{where} closed the connection before it read the request, so the"
            " worker died or closed it early. nginx logs '(32: Broken pipe) while"
            " sending request to upstream' and returns 502."
        )
    elif code == errno.EAGAIN and address.kind == "unix" and during_connect:
        # connect() on a unix socket fails at once when the listen queue is
        # full, where a TCP connect() waits for the queue to drain.
        verdict = "backlog_full"
        detail = (
            f"{call} failed because the socket's listen queue is full, so every"
            " worker is busy and gunicorn's backlog of waiting connections is"
            " used up. nginx logs '(11: Resource temporarily unavailable) while"
            " connecting to upstream' and returns 502."
        )
    elif during_connect:
        verdict = "connect_failed"
        detail = f"{call} failed with {errno.errorcode.get(code, code)}: {error}."
    else:
        verdict = "error"
        detail = f"Reading the response from {where} failed: {error}."
    return Outcome(address, verdict, None, elapsed, None, detail, evidence)
