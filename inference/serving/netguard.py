"""Server-side request forgery guard for endpoint URLs that admins add at run time.

An admin-supplied ``base_url`` must not let the bot reach the machine it runs on, the cloud metadata
service or the private network. Three layers:

- :meth:`Guard.check_url`: the URL's form (scheme, user-info, https unless the operator allows the host,
  IP literals that are not global, ``localhost``), no DNS;
- :meth:`Guard.check_resolved`: every address the host resolves to must be global;
- :class:`GuardedResolver` / :meth:`Guard.connector`: the same address check inside aiohttp at request
  time, on the very addresses it then connects to, so a name that resolved to a public address at
  configuration time cannot be re-pointed (DNS rebinding) at a private one later.

Hosts in ``allowed_hosts`` (the operator's own list, never an admin's) skip the address checks and may
use plain http; ``allow_private`` skips the address checks for every host (a fully private deployment).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

#: ``resolve(host, port) -> addresses``; injectable so tests can simulate DNS without a network.
ResolveFn = Callable[[str, int], Awaitable[Sequence[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Letters, digits, '-', '_' and dots: anything else in a host name (spaces, '%', '\') is a parser trick.
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")
#: DNS limits (RFC 1035): longer names cannot resolve, and the IDNA codec raises on them rather than refusing.
_MAX_LABEL, _MAX_NAME = 63, 253
# Legacy numeric IPv4 forms (2130706433, 0x7f000001, 127.1, 0177.0.0.1) that inet_aton accepts.
_NUMERIC_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


class UnsafeURL(ValueError):
    """The URL (or an address its host resolves to) is not allowed as a model endpoint."""


class UnresolvableHost(UnsafeURL):
    """The host did not resolve: possibly a passing DNS failure rather than an unsafe URL."""


def _normalise_host(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def parse_ip(host: str) -> IPAddress | None:
    """The address an IP literal denotes, legacy numeric IPv4 forms included; ``None`` for a name."""
    host = _normalise_host(host)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_V4.fullmatch(host):
        try:
            # inet_aton understands exactly the forms the C resolver would turn into an address.
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), 6to4 or NAT64 IPv6 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip in _NAT64:  # a NAT64 gateway would forward to the embedded (maybe private) IPv4 address
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 judged by its IPv4 part)."""
    inner = _embedded_v4(ip)
    if inner is not None:
        return is_public(inner)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return False
        if ip.is_site_local:
            return False
    # is_global alone lets multicast through (224.0.0.0/4 is "global"), hence the explicit flags.
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified
    )


async def _system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class Guard:
    """Decides whether an endpoint URL may be used. Immutable; share one per deployment."""

    __slots__ = ("_resolve", "allow_private", "allowed_hosts")

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_hosts: Iterable[str] = (),
        resolve: ResolveFn | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_hosts: frozenset[str] = frozenset(_normalise_host(h) for h in allowed_hosts)
        self._resolve = resolve

    def __repr__(self) -> str:
        return f"Guard(allow_private={self.allow_private}, allowed_hosts={sorted(self.allowed_hosts)})"

    def is_allowed_host(self, host: str) -> bool:
        """The operator listed this host: plain http allowed and its addresses are not checked."""
        return _normalise_host(host) in self.allowed_hosts

    def check_url(self, url: str) -> None:
        """Refuse a URL by its form alone (no DNS). Raises :class:`UnsafeURL` with the reason."""
        host = _check_form(url)
        parsed = URL(url)
        allowed = self.is_allowed_host(host)
        if parsed.scheme == "http" and not allowed:
            raise UnsafeURL(f"{host}: plain http is only allowed for operator-allowed hosts; use https")
        if allowed or self.allow_private:
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise UnsafeURL(f"{host}: refers to this machine (loopback)")
        ip = parse_ip(host)
        if ip is not None:
            self.check_address(host, ip)

    def check_address(self, host: str, address: str | IPAddress) -> None:
        """Refuse one resolved address of ``host`` unless it is public (or the operator allows it)."""
        if self.allow_private or self.is_allowed_host(host):
            return
        ip = address if not isinstance(address, str) else parse_ip(address.split("%", 1)[0])
        if ip is None:
            raise UnsafeURL(f"{host}: resolved to something that is not an IP address")
        if not is_public(ip):
            inner = _embedded_v4(ip)
            kind = _describe(inner or ip)
            if parse_ip(host) is None:
                # A name: say why, never where it points. The address of an internal host is itself
                # something a server admin probing the network should not learn from our refusal.
                raise UnsafeURL(f"{host}: resolves to a {kind} address; only public addresses are allowed")
            shown = f"{ip} (IPv4 {inner})" if inner is not None else str(ip)  # the admin typed this literal
            raise UnsafeURL(f"{host}: {shown} is a {kind} address; only public addresses are allowed")

    async def lookup(self, host: str, port: int) -> list[str]:
        """The host's addresses via the injected resolver, else the system's; OSError on failure."""
        # dict.fromkeys: dedupe, keep order (getaddrinfo repeats addresses per protocol).
        addresses = list(dict.fromkeys(await (self._resolve or _system_resolve)(host, port)))
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        return addresses

    async def resolve(self, host: str, port: int) -> list[str]:
        """:meth:`lookup`, with failures as :class:`UnresolvableHost` (clear for an admin)."""
        try:
            return await self.lookup(host, port)
        except OSError as exc:
            raise UnresolvableHost(f"{host}: cannot be resolved ({exc.strerror or exc})") from None
        except UnicodeError:  # the IDNA codec refuses the name (too long, bad characters)
            raise UnsafeURL(f"{_shorten(host)}: not a valid host name") from None

    async def check_resolved(self, url: str) -> None:
        """:meth:`check_url`, then every address the host resolves to must be public."""
        self.check_url(url)
        parsed = URL(url)
        host = _normalise_host(parsed.raw_host or "")
        if self.allow_private or self.is_allowed_host(host):
            return
        ip = parse_ip(host)
        if ip is not None:  # a literal: already judged by check_url, and nothing to resolve
            return
        for address in await self.resolve(host, parsed.port or 443):
            self.check_address(host, address)

    # Alias so call sites read naturally: ``await guard.check(url)``.
    check = check_resolved

    def resolver(self, inner: AbstractResolver | None = None) -> GuardedResolver:
        return GuardedResolver(self, inner)

    def connector(self, **kwargs: object) -> aiohttp.TCPConnector:
        """A connector whose every DNS answer passes through this guard (must run inside a loop)."""
        return aiohttp.TCPConnector(resolver=self.resolver(), **kwargs)  # type: ignore[arg-type]


def _check_form(url: str) -> str:
    """Scheme, user-info and host syntax; returns the normalised host."""
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UnsafeURL("URL contains whitespace or control characters")
    try:
        parsed = URL(url)
    except UnicodeError:  # yarl's IDNA encoding: a label empty or over 63 characters, or refused characters
        raise UnsafeURL(
            "not a valid host name: a part (between dots) is empty, over 63 characters or not allowed"
        ) from None
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL(f"scheme {parsed.scheme or '(none)'!r} not allowed; use https")
    # '@' anywhere in the authority is user-info (or a trick to make the host look like another one).
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in (parsed.raw_authority or ""):
        raise UnsafeURL("user-info (user:password@) is not allowed in the URL; use api_key_env instead")
    raw_host = parsed.raw_host
    if not raw_host:
        raise UnsafeURL("URL has no host")
    host = _normalise_host(raw_host)
    if parse_ip(host) is None:
        if len(host) > _MAX_NAME:
            raise UnsafeURL(f"host name {_shorten(host)!r} is too long ({len(host)} characters; at most {_MAX_NAME})")
        if any(len(label) > _MAX_LABEL for label in host.split(".")):
            raise UnsafeURL(
                f"host name {_shorten(host)!r} has a part over {_MAX_LABEL} characters (between dots); "
                "no such name can exist"
            )
        if not _HOSTNAME.fullmatch(host + "."):
            raise UnsafeURL(f"{_shorten(raw_host)!r} is not a valid host name")
    return host


def _shorten(text: str, keep: int = 40) -> str:
    """A long host name as it may be shown back: its start, an ellipsis and its length."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def _describe(ip: IPAddress) -> str:
    for flag in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{flag}", False):
            return flag.replace("_", "-")
    return "non-public"


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses (raises :class:`UnsafeURL`) when any answer is not public.

    aiohttp connects only to the addresses this returns, so the check and the connection see the same
    answer (no time-of-check/time-of-use gap). IP-literal hosts never reach a resolver: the HTTP backend
    runs :meth:`Guard.check_url` on each request for those.
    """

    def __init__(self, guard: Guard, inner: AbstractResolver | None = None) -> None:
        self._guard = guard
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            # lookup raises OSError on DNS failure: aiohttp reports it as a (retryable) connection error.
            results = [_result(host, addr, port) for addr in await self._guard.lookup(host, port)]
        else:
            results = await self._inner.resolve(host, port, family)
        for result in results:
            self._guard.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _result(hostname: str, address: str, port: int) -> ResolveResult:
    ip = parse_ip(address.split("%", 1)[0])
    family = socket.AF_INET6 if isinstance(ip, ipaddress.IPv6Address) else socket.AF_INET
    return ResolveResult(hostname=hostname, host=address, port=port, family=family, proto=0, flags=0)
