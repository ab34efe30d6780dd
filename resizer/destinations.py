"""Where a webhook may go, and going exactly there.

A callback URL is checked once: parsed (http/https with a host), its host
resolved, and every address it resolves to must be public unless
``WEBHOOK_ALLOWLIST`` names the host or a network holding the address.  The
result is a :class:`Destination` that carries the checked addresses.

:func:`post` then connects to a checked address itself instead of handing the
URL to an HTTP client, which would resolve the name a second time: an attacker's
DNS server can answer a public address to the check and a private one to the
connection (DNS rebinding).  The name stays where it belongs: in the ``Host``
header and, for https, in the TLS server name (SNI) and the certificate check.

The checks are pure apart from the resolver, which callers (and tests) inject.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import requests.certs
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError

from settings import Settings

from .errors import InvalidParameter

__all__ = ["Allowlist", "CallbackUrl", "Destination", "DeliveryError", "Resolver",
           "check", "check_destination", "parse_allowlist", "parse_url", "post"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Shaped like :func:`socket.getaddrinfo`, which is what it defaults to.
Resolver = Callable[..., list[tuple]]

DEFAULT_PORTS = {"http": 80, "https": 443}
INVALID_URL = "Invalid parameter 'callback_url': it must be a valid http(s) URL."
NOT_ENABLED = "Invalid parameter 'callback_url': webhooks are not enabled on this service."
# Well-known NAT64 prefix (RFC 6052): 64:ff9b::a.b.c.d reaches a.b.c.d through a translator.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class CallbackUrl:
    """A parsed http(s) URL; ``host`` is lower-case, without IPv6 brackets."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent on the request line
    auth: str | None = field(default=None, repr=False, compare=False)  # "user:password" from the URL

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True)
class Destination(CallbackUrl):
    """A callback URL whose addresses were checked: connect only to these.

    ``host`` is in ASCII (IDNA) form: the name that was resolved, and the one sent
    in the Host header and as the TLS server name.
    """

    addresses: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """The address to connect to: the first one the name resolved to."""
        return self.addresses[0]


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()


class DeliveryError(Exception):
    """The POST did not get an HTTP answer (connection, TLS or timeout failure)."""


def parse_url(url: str) -> CallbackUrl:
    """Parse a callback URL, or raise :class:`InvalidParameter` (the same message for every flaw)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # both raise ValueError on malformed URLs
    except (ValueError, TypeError, AttributeError):
        raise InvalidParameter(INVALID_URL) from None
    if parts.scheme not in DEFAULT_PORTS or not host or port == 0:
        raise InvalidParameter(INVALID_URL)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    auth = None
    if parts.username is not None:  # what requests did with user:password@ in the URL: basic auth
        auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return CallbackUrl(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], target, auth)


def parse_allowlist(text: str) -> Allowlist:
    """``WEBHOOK_ALLOWLIST``: comma-separated host names, addresses and CIDR networks."""
    hosts, networks = set(), []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        hosts.add(item.lower())  # an address is also matched literally, as a URL host
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            pass
    return Allowlist(frozenset(hosts), tuple(networks))


def check(url: str | CallbackUrl, allowlist: Allowlist, resolver: Resolver | None = None) -> Destination:
    """Resolve the URL's host once and check every address it gave; return them in resolver order.

    Raises :class:`InvalidParameter` if the URL is malformed, the host does not
    resolve, or any address is non-public (or multicast) without being allowlisted:
    one bad answer among good ones is enough to refuse, as a rebinding server
    could make either one the one used.
    """
    parsed = url if isinstance(url, CallbackUrl) else parse_url(url)
    host = parsed.host
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
        addresses = _resolve(host, parsed.port, resolver or socket.getaddrinfo)
    except (OSError, UnicodeError, ValueError):  # gaierror, IDNA errors, embedded NULs
        addresses = []
    if not addresses:
        raise InvalidParameter(f"Invalid parameter 'callback_url': the host {parsed.host} does not resolve.")
    if host not in allowlist.hosts and parsed.host not in allowlist.hosts:
        for address in addresses:
            if not _acceptable(address, allowlist.networks):
                raise InvalidParameter(
                    f"Invalid parameter 'callback_url': {parsed.host} resolves to a non-public address ({address}); "
                    "callbacks may only go to public hosts."
                )
    return Destination(parsed.scheme, host, parsed.port, parsed.target, parsed.auth,
                       tuple(str(a) for a in addresses))


def check_destination(url: str, settings: Settings) -> Destination:
    """The check at submit (and before each delivery): webhooks must be on, and the URL acceptable."""
    parsed = parse_url(url)
    if not settings.webhook_secret:
        raise InvalidParameter(NOT_ENABLED)
    return check(parsed, parse_allowlist(settings.webhook_allowlist))


def post(dest: Destination, body: bytes, headers: Mapping[str, str], timeout: float, *,
         ca_certs: str | None = None) -> int:
    """POST ``body`` to the checked destination; return the HTTP status (redirects are not followed).

    The TCP connection goes to ``dest.address`` (never to a fresh resolution of
    the name).  If that connect fails (refused, unreachable or timed out), the
    first checked address of the other family is tried, so a dual-stack receiver
    still works from an IPv4-only worker; nothing has been sent at that point.  ``ca_certs`` defaults to the
    bundle requests would use (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, else certifi).
    Raises :class:`DeliveryError` when no HTTP answer came back.
    """
    headers = {**headers, "Host": dest.host_header}
    if dest.auth is not None and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = urllib3.util.make_headers(basic_auth=dest.auth)["authorization"]
    error: Exception | None = None
    for address in _connect_order(dest.addresses):
        try:
            with _pool(dest, address, timeout, ca_certs) as pool:
                response = pool.urlopen("POST", dest.target, body=body, headers=headers, redirect=False,
                                        retries=False, assert_same_host=False, preload_content=False)
                response.close()  # only the status matters: read no body, of whatever size
                return response.status
        except ConnectTimeoutError as exc:  # refused or timed out connecting, nothing sent: try the next
            error = exc
        except (HTTPError, OSError) as exc:
            raise DeliveryError(f"callback to {dest.host_header} ({address}) failed: {exc}") from exc
    raise DeliveryError(f"callback to {dest.host_header} failed: {error}") from error


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]  # a literal address: nothing to resolve
    except ValueError:
        pass
    seen: dict[IPAddress, None] = {}  # ordered, without the duplicates of several socket types
    for info in resolver(host, port, proto=socket.IPPROTO_TCP):
        seen[ipaddress.ip_address(info[4][0])] = None
    return list(seen)


def _acceptable(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    # An IPv6 address that carries an IPv4 one (::ffff:a.b.c.d, 6to4, NAT64) is judged as both.
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            candidates.append(address.ipv4_mapped)
        if address.sixtofour:
            candidates.append(address.sixtofour)
        if address in NAT64:
            candidates.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if any(c in net for c in candidates for net in networks):
        return True
    return all(c.is_global and not c.is_multicast for c in candidates)


def _connect_order(addresses: tuple[str, ...]) -> list[str]:
    first = addresses[0]
    other = next((a for a in addresses if (":" in a) != (":" in first)), None)
    return [first] if other is None else [first, other]


def _pool(dest: Destination, address: str, timeout: float,
          ca_certs: str | None) -> urllib3.HTTPConnectionPool:
    kwargs = dict(timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False, maxsize=1)
    if dest.scheme == "http":
        return urllib3.HTTPConnectionPool(address, dest.port, **kwargs)
    bundle = ca_certs or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") \
        or requests.certs.where()
    # server_hostname sets the SNI name; urllib3 2.x also verifies the certificate against it, and
    # assert_hostname says so explicitly, so that the address never stands in for the name.
    return urllib3.HTTPSConnectionPool(
        address, dest.port, cert_reqs="CERT_REQUIRED",
        ca_cert_dir=bundle if os.path.isdir(bundle) else None,
        ca_certs=None if os.path.isdir(bundle) else bundle,
        server_hostname=dest.host, assert_hostname=dest.host, **kwargs,
    )
