"""The addresses gunicorn listens on, and the host's listening sockets.

``binds`` parses the effective ``bind`` setting the way gunicorn's
``util.parse_address`` does (unchanged from 20.0.0 to 27.0.1). When a systemd
socket unit activates the service, gunicorn listens on that unit's
``ListenStream=`` sockets instead: its arbiter uses the descriptors systemd
passes in ``LISTEN_FDS`` and ``sock.create_sockets`` then ignores every
address of ``bind``.

``listen_sockets`` reads ``/proc/net`` and every ``/proc/PID/fd``, so that
it names every process with a listening socket open. A master shares its
socket with its workers, and ``psutil.net_connections`` reports only one of
those processes for it.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import posixpath
import re
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from doctor.context import Context, FactUnavailable, fact
from doctor.findings import Location

if TYPE_CHECKING:
    from doctor.unitfile import UnitEntry, UnitFile

DEFAULT_PORT = 8000
SD_LISTEN_FDS_START = 3
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
RESOLVED_BY_GETADDRINFO = "getaddrinfo on this host"
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
_TCP_LISTEN = "0A"
# __SO_ACCEPTCON in the Flags column of /proc/net/unix: the socket listens.
_UNIX_ACCEPTCON = 0x10000
_UNIX_STREAM = 1


class BindError(ValueError):
    """A bind value gunicorn rejects, with gunicorn's own message."""


@dataclass(frozen=True)
class Bind:
    """One address gunicorn listens on, parsed as gunicorn parses it."""

    text: str
    kind: str  # "tcp", "unix" or "fd"
    host: str | None = None
    port: int | None = None
    path: str | None = None
    fd: int | None = None
    origin: str = ""
    location: Location | None = None
    activated: bool = False

    @property
    def is_wildcard(self) -> bool:
        return self.kind == "tcp" and self.host in WILDCARD_HOSTS

    @property
    def is_name(self) -> bool:
        """Tell whether the host is a name that gunicorn resolves at start."""
        return (
            self.kind == "tcp"
            and self.host not in WILDCARD_HOSTS
            and not is_ip_literal(self.host or "")
        )

    def describe(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return format_address(self.host or "0.0.0.0", self.port)


class BindProblem(NamedTuple):
    """A bind or ``ListenStream=`` value that gunicorn cannot listen on."""

    text: str
    message: str
    origin: str
    location: Location | None = None


@dataclass
class SocketUnit:
    """A systemd socket unit that passes its sockets to the service."""

    path: str
    listen_streams: list[UnitEntry]
    accept: bool
    accept_entry: UnitEntry | None
    unit: UnitFile
    enabled: bool | None = None


@dataclass
class BindPlan:
    """The addresses gunicorn listens on, with the source of each."""

    binds: list[Bind]
    configured: list[Bind]
    problems: list[BindProblem]
    setting: str
    source_kind: str
    socket_unit: SocketUnit | None = None
    reuse_port: bool = False
    gunicorn_version: str | None = None


def is_ipv6_literal(host: str) -> bool:
    """Tell whether ``host`` is an IPv6 address, as gunicorn's ``util.is_ipv6``."""
    try:
        socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):
        return False
    return True


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def format_address(host: str, port: int | str | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_bind(text: str, working_directory: str | None = None) -> Bind:
    """Parse one bind value as gunicorn's ``util.parse_address`` does.

    Raises BindError with gunicorn's message for a value gunicorn rejects at
    start, and for a port outside 0-65535, on which gunicorn's ``bind()``
    call raises OverflowError.
    """
    if re.match(r"unix:(//)?", text):
        path = re.split(r"unix:(//)?", text)[-1]
        if not path:
            raise BindError(f"{text!r} names no socket path")
        if not path.startswith(("/", "\0")) and working_directory:
            path = posixpath.normpath(posixpath.join(working_directory, path))
        return Bind(text, "unix", path=path)
    if text.startswith("fd://"):
        number = text[5:]
        try:
            return Bind(text, "fd", fd=int(number))
        except ValueError:
            raise BindError(f"{number!r} is not a valid file descriptor.") from None
    netloc = text
    if netloc.startswith("tcp://"):
        netloc = netloc.split("tcp://")[1]
    host, port = netloc, str(DEFAULT_PORT)
    if "[" in netloc and "]" in netloc:
        host = netloc.split("]")[0][1:]
        port = (netloc.split("]:") + [str(DEFAULT_PORT)])[1]
    elif ":" in netloc:
        # gunicorn keeps only the first two fields, so "a:1:2" binds a:1.
        host, port = (netloc.split(":") + [str(DEFAULT_PORT)])[:2]
    elif netloc == "":
        host = "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise BindError(f"{port!r} is not a valid port number.") from None
    if not 0 <= number <= 65535:
        raise BindError(
            f"port {number} is out of range; bind() raises OverflowError:"
            " port must be 0-65535"
        )
    return Bind(text, "tcp", host=host.lower(), port=number)


def parse_listen_stream(value: str) -> Bind:
    """Parse a ``ListenStream=`` value of a socket unit, per systemd.socket(5).

    A bare port listens on ``[::]`` for IPv6 and IPv4 both (BindIPv6Only=
    default). Raises BindError for a value gunicorn cannot use.
    """
    if value.startswith(("/", "@")):
        return Bind(value, "unix", path=value, activated=True)
    if value.isdigit():
        return Bind(value, "tcp", host="::", port=int(value), activated=True)
    if value.startswith("["):
        match = re.fullmatch(r"\[([^\]%]+)(?:%[^\]]*)?\]:(\d+)", value)
        if match and is_ipv6_literal(match[1]):
            return Bind(
                value, "tcp", host=match[1].lower(), port=int(match[2]), activated=True
            )
    match = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d+)", value)
    if match and is_ip_literal(match[1]):
        return Bind(value, "tcp", host=match[1], port=int(match[2]), activated=True)
    raise BindError(
        f"{value!r} is not a stream address gunicorn can use (a path, a port,"
        " IPV4:PORT or [IPV6]:PORT)"
    )


@fact("binds")
def binds(ctx: Context) -> BindPlan:
    """Return the addresses gunicorn listens on and where each comes from."""
    settings = ctx.fact("settings")
    if settings.error and settings.error.get("stage") == "config":
        raise FactUnavailable(
            "the config file failed to load, so the addresses gunicorn would"
            " bind are unknown"
        )
    if settings.estimated and "bind" in settings.non_literal:
        raise FactUnavailable(
            f"bind is set by an expression the static reader does not evaluate:"
            f" {settings.non_literal['bind']}"
        )
    working_directory = settings.get("chdir") or (
        ctx.target.chdir.value if ctx.target.chdir else None
    )
    values, source_kind, origin = _bind_values(ctx, settings)
    location = settings.location("bind")
    plan = BindPlan(
        binds=[],
        configured=[],
        problems=[],
        setting=origin,
        source_kind=source_kind,
        reuse_port=bool(settings.get("reuse_port")),
        gunicorn_version=settings.gunicorn_version,
    )

    for value in values:
        try:
            bind = parse_bind(value, working_directory)
        except BindError as exc:
            plan.problems.append(BindProblem(value, str(exc), origin, location))
            continue
        plan.configured.append(replace(bind, origin=origin, location=location))

    plan.socket_unit = _socket_unit(ctx)
    if plan.socket_unit is None or not plan.socket_unit.listen_streams:
        # Without LISTEN_FDS gunicorn binds the addresses of bind itself.
        plan.binds = list(plan.configured)
        return plan
    # gunicorn adds the fd:// binds to systemd's descriptors and ignores the
    # addresses of bind (sock.create_sockets).
    plan.binds = [b for b in plan.configured if b.kind == "fd"]
    for entry in plan.socket_unit.listen_streams:
        entry_origin = f"ListenStream={entry.value} ({entry.path}:{entry.line})"
        entry_location = Location(entry.path, entry.line)
        try:
            bind = parse_listen_stream(entry.value)
        except BindError as exc:
            plan.problems.append(
                BindProblem(entry.value, str(exc), entry_origin, entry_location)
            )
            continue
        plan.binds.append(replace(bind, origin=entry_origin, location=entry_location))
    return plan


def _bind_values(ctx: Context, settings) -> tuple[list[str], str, str]:
    value = settings.get("bind")
    source = settings.source("bind")
    if isinstance(value, str):
        value = [value]
    values = [str(v) for v in value or []]
    environment = ctx.target.environment or {}
    if settings.estimated and source.kind == "default" and "PORT" in environment:
        # gunicorn's default is 0.0.0.0:$PORT when PORT is set, which the
        # static reader does not model.
        values = [f"0.0.0.0:{environment['PORT']}"]
        return values, "default", f"bind = {values!r} (default, from PORT)"
    return values, source.kind, settings.describe("bind")


def _socket_unit(ctx: Context) -> SocketUnit | None:
    """Find the socket unit systemd passes to the service, if there is one.

    systemd.service(5): a service gets the sockets of the socket unit with
    its own name, and of every unit its ``Sockets=`` names.
    """
    from doctor.unitfile import load_unit

    target = ctx.target
    if target.unit is None or target.service is None:
        return None
    service_path = target.unit.value
    directory = posixpath.dirname(service_path)
    name = posixpath.basename(service_path)
    stem = name.removesuffix(".service")
    candidates = [posixpath.join(directory, f"{stem}.socket")]
    named = target.service.unit.value("Service", "Sockets")
    if named is not None:
        for socket_name in named.value.split():
            candidates.extend(
                posixpath.join(unit_dir, socket_name)
                for unit_dir in (directory, *UNIT_DIRS)
            )
    for candidate in candidates:
        host = ctx.fs.host(candidate)
        if not host.is_file():
            continue
        unit = load_unit(host, candidate)
        accept = unit.value("Socket", "Accept")
        # NOTE: a socket that another unit pulls in, or that an operator
        # started by hand, counts as not enabled here.
        wants = posixpath.join(
            "/etc/systemd/system/sockets.target.wants", posixpath.basename(candidate)
        )
        return SocketUnit(
            path=candidate,
            listen_streams=unit.values("Socket", "ListenStream"),
            accept=accept is not None
            and accept.value.strip().lower() in ("yes", "true", "1", "on"),
            accept_entry=accept,
            unit=unit,
            enabled=ctx.fs.host(wants).exists() or ctx.fs.host(wants).is_symlink(),
        )
    return None


# --- listening sockets ----------------------------------------------------------


class ListenSocket(NamedTuple):
    """A listening socket of this host and every process that has it open."""

    family: str  # "inet", "inet6" or "unix"
    host: str | None
    port: int | None
    path: str | None
    inode: int
    uid: int | None
    holders: tuple[tuple[int, int], ...]  # (pid, fd)

    @property
    def pids(self) -> list[int]:
        return sorted({pid for pid, _ in self.holders})

    def describe(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        return format_address(self.host or "", self.port)

    def ss_row(self, table: dict) -> str:
        """Render the socket like a row of ``ss -ltnp`` or ``ss -lxp``."""
        users = []
        for pid, fd in sorted(self.holders):
            info = table.get(pid)
            name = info.name if info is not None else "?"
            users.append(f'("{name}",pid={pid},fd={fd})')
        holders = f" users:({','.join(users)})" if users else ""
        return f"LISTEN {self.describe()}{holders}"


@dataclass
class SocketTable:
    sockets: list[ListenSocket]
    unreadable_pids: int = 0


@fact("listen_sockets")
def listen_sockets(ctx: Context) -> SocketTable:
    """Return the host's listening TCP and unix stream sockets with their holders."""
    if not ctx.fs.is_live:
        raise FactUnavailable(
            f"the target is the tree under --root {ctx.fs.root}, not this host's"
            " sockets"
        )
    if ctx.static:
        raise FactUnavailable("static mode does not read the host's sockets")
    return read_listen_sockets()


def read_listen_sockets(proc: str = "/proc") -> SocketTable:
    found: list[tuple[str, str | None, int | None, str | None, int, int | None]] = []
    for name, family in (("tcp", "inet"), ("tcp6", "inet6")):
        found.extend(_read_tcp(f"{proc}/net/{name}", family))
    found.extend(_read_unix(f"{proc}/net/unix"))
    if not found and not os.path.exists(f"{proc}/net/tcp"):
        raise FactUnavailable(f"{proc}/net/tcp cannot be read")
    holders, unreadable = _socket_holders(proc, {entry[4] for entry in found})
    sockets = [
        ListenSocket(
            family, host, port, path, inode, uid, tuple(holders.get(inode, ()))
        )
        for family, host, port, path, inode, uid in found
    ]
    return SocketTable(sockets, unreadable)


def _read_tcp(path: str, family: str):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        entries.append(
            (
                family,
                _decode_address(address),
                int(port, 16),
                None,
                int(fields[9]),
                int(fields[7]),
            )
        )
    return entries


def _decode_address(hexadecimal: str) -> str:
    """Decode /proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hexadecimal)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _read_unix(path: str):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8:
            continue
        flags, kind = int(fields[3], 16), int(fields[4], 16)
        if not flags & _UNIX_ACCEPTCON or kind != _UNIX_STREAM:
            continue
        entries.append(("unix", None, None, fields[7], int(fields[6]), None))
    return entries


def _socket_holders(
    proc: str, inodes: set[int]
) -> tuple[dict[int, list[tuple[int, int]]], int]:
    holders: dict[int, list[tuple[int, int]]] = {}
    unreadable = 0
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fd_dir = f"{proc}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            unreadable += 1
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in inodes:
                    holders.setdefault(inode, []).append((int(entry), int(fd)))
    return holders, unreadable


# --- names --------------------------------------------------------------------


class Resolution(NamedTuple):
    """The addresses a host name has, for gunicorn and for nginx."""

    name: str
    gunicorn: str | None  # the IPv4 address gunicorn binds
    nginx: tuple[str, ...]  # every address, in the order nginx gets them
    how: str
    problem: str | None = None


def hosts_entries(ctx: Context) -> list[tuple[str, list[str]]]:
    """Return (address, names) rows of /etc/hosts under the root, in file order."""
    try:
        text = ctx.fs.host("/etc/hosts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) > 1 and is_ip_literal(words[0].split("%")[0]):
            rows.append((words[0], [w.lower() for w in words[1:]]))
    return rows


def _files_first(ctx: Context) -> bool:
    """Tell whether nsswitch.conf consults /etc/hosts before any other source."""
    try:
        text = ctx.fs.host("/etc/nsswitch.conf").read_text(
            encoding="utf-8", errors="replace"
        )
    except OSError:
        # Without nsswitch.conf glibc queries DNS before /etc/hosts.
        return False
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "hosts:":
            return len(words) > 1 and words[1] == "files"
    return False


def resolve_name(ctx: Context, name: str) -> Resolution:
    """Resolve a host name without sending a DNS query.

    Only names that /etc/hosts lists are resolved. On the live host, when
    nsswitch.conf reads /etc/hosts first, ``getaddrinfo`` is called the way
    each program calls it. CPython's ``bind()`` with a name requests AF_INET
    and takes the first address. nginx 1.5.4 and later request AF_UNSPEC
    with AI_ADDRCONFIG and keep every address in order. Otherwise the
    addresses come from the hosts file, in file order.
    """
    name = name.lower()
    listed = [address for address, names in hosts_entries(ctx) if name in names]
    hosts_path = str(ctx.fs.host("/etc/hosts"))
    if not listed:
        return Resolution(
            name,
            None,
            (),
            hosts_path,
            problem=f"{name} is not listed in {hosts_path}; the doctor sends no DNS"
            " queries",
        )
    if ctx.fs.is_live and _files_first(ctx):
        try:
            ipv4 = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror:
            ipv4 = []
        try:
            every = socket.getaddrinfo(
                name,
                None,
                socket.AF_UNSPEC,
                socket.SOCK_STREAM,
                0,
                socket.AI_ADDRCONFIG,
            )
        except socket.gaierror:
            every = []
        nginx = tuple(dict.fromkeys(item[4][0] for item in every))
        return Resolution(
            name,
            ipv4[0][4][0] if ipv4 else None,
            nginx,
            RESOLVED_BY_GETADDRINFO,
        )
    first_ipv4 = next((a for a in listed if not is_ipv6_literal(a)), None)
    return Resolution(
        name, first_ipv4, tuple(dict.fromkeys(listed)), f"{hosts_path}, in file order"
    )


def is_local_host(ctx: Context, host: str | None) -> bool:
    """Tell whether a connection to ``host`` stays on this machine."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        listed = [a for a, names in hosts_entries(ctx) if host.lower() in names]
        if host.lower() == "localhost" and not listed:
            return True
        return bool(listed) and all(is_local_host(ctx, a) for a in listed)
    if address.is_loopback or address.is_unspecified:
        return True
    return ctx.fs.is_live and str(address) in _interface_addresses()


def _interface_addresses() -> set[str]:
    import psutil

    found = set()
    for addresses in psutil.net_if_addrs().values():
        for item in addresses:
            if item.family in (socket.AF_INET, socket.AF_INET6):
                found.add(item.address.split("%")[0])
    return found


def runtime_directories(service) -> list[str]:
    """Return the absolute paths of the unit's ``RuntimeDirectory=`` entries."""
    if service is None:
        return []
    directories = []
    for entry in service.unit.values("Service", "RuntimeDirectory"):
        for word in entry.value.split():
            # A "name:link" value also creates a symlink. The directory is the
            # part before the colon.
            directories.append(posixpath.join("/run", word.split(":", 1)[0]))
    return directories


def tmpfiles_directories(ctx: Context) -> set[str]:
    """Return directories that tmpfiles.d(5) lines create at boot (d and D)."""
    found = set()
    for directory in ("/etc/tmpfiles.d", "/run/tmpfiles.d", "/usr/lib/tmpfiles.d"):
        for path in glob.glob(str(ctx.fs.host(directory) / "*.conf")):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    lines = handle.read().splitlines()
            except OSError:
                continue
            for line in lines:
                words = line.split()
                if len(words) > 1 and words[0].rstrip("!-+=~^") in ("d", "D"):
                    found.add(posixpath.normpath(words[1]))
    return found
