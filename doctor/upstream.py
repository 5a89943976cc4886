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
import ipaddress
import math
import re
import socket
import time
from dataclasses import dataclass, field
from typing import NamedTuple

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


class Address(NamedTuple):
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
    started = time.monotonic()
    try:
        connected = _connect(address, connect_host, connect_timeout)
    except TimeoutError:
        return Outcome(
            address,
            "connect_timeout",
            None,
            time.monotonic() - started,
            None,
            f"connect() to {where} did not complete within {connect_timeout:g} s,"
            " so the listen backlog is full or a firewall drops the packets. nginx"
            " logs 'upstream timed out (110: Connection timed out) while"
            " connecting to upstream' and returns 504.",
            [f"connect() to {where}: timed out after {connect_timeout:g} s"],
        )
    except OSError as exc:
        return os_error_outcome(address, where, exc, True, time.monotonic() - started)
    # Only a connection that was accepted needs the HTTP client.
    from doctor.httpexchange import exchange

    return exchange(
        address,
        connected,
        where=where,
        connect_host=connect_host,
        host_header=host_header,
        path=path,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        buffer_size=buffer_size,
        slow_after=slow_after,
        started=started,
    )


def _connect(
    address: Address, connect_host: str | None, timeout: float
) -> socket.socket:
    """Connect to ``address``; ``connect_host`` is a loopback IP for TCP."""
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        destination = address.path
    else:
        family = socket.AF_INET6 if ":" in connect_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # urllib3 sets the same option on the connections it opens.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        destination = (connect_host, address.port)
    sock.settimeout(timeout)
    try:
        sock.connect(destination)
    except BaseException:
        sock.close()
        raise
    return sock


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


def os_error_outcome(
    address: Address,
    where: str,
    error: OSError,
    during_connect: bool,
    elapsed: float,
) -> Outcome:
    """Classify a socket error from connect() or from reading the response."""
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
