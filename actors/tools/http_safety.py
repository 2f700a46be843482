"""Outbound HTTP for tools that agents drive: an SSRF guard and a GET that cannot be steered past it.

* Only ``http`` and ``https``, no credentials in the URL.
* The host is resolved and *every* address must be public: loopback, private, shared (CGNAT),
  link-local, multicast, reserved, unspecified and cloud-metadata addresses are refused, unless
  the host or the address matches ``INTERLOCK_TOOLS_ALLOW_HOSTS`` (hostnames or CIDRs).
* The connection goes to the address that was checked (the URL is rewritten to it; ``Host``,
  TLS SNI and certificate checks keep the name), so DNS cannot answer differently a moment later.
* Redirects are followed here, one hop at a time, each hop checked like the first, at most
  ``INTERLOCK_HTTP_MAX_REDIRECTS``. Environment proxies are ignored: they would bypass the check.

Errors are translated at this boundary: refusals are :class:`UnsafeURL` (permanent), network
trouble and 5xx answers :class:`HostUnavailable` (transient, counted by the circuit breaker),
429 a :class:`TransientError` carrying ``Retry-After``, other 4xx :class:`PermanentError`.

Within a task, ``INTERLOCK_HTTP_TIMEOUT`` is cut to the task's remaining time (``requests``
applies it to each socket operation), and a body is read in chunks with the task's limits and
cancellation checked between them (:mod:`actors.running`), so a slow or trickling host cannot
hold a task past its time limit.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from actors.errors import HostUnavailable, PermanentError, TransientError, UnsafeURL
from actors.running import call_timeout, check_interrupted
from interlock.settings import Settings, SettingsError

__all__ = [
    "USER_AGENT",
    "AllowList",
    "Target",
    "parse_allow_hosts",
    "address_problem",
    "check_url",
    "guarded_get",
    "raise_for_status",
    "read_capped",
    "retry_after_seconds",
    "target_of",
]

logger = logging.getLogger(__name__)

USER_AGENT = "Interlock/0.1 (+tools)"
#: Bytes read between two looks at the task's limits (a trickling host sends few bytes per wait).
READ_CHUNK = 16 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, OpenStack; AWS over IPv6).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def allows_host(self, host: str) -> bool:
        return host in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)


def parse_allow_hosts(value: str | Iterable[str]) -> AllowList:
    """``"localhost, 10.0.0.0/8, ::1"`` -> hostnames and networks (a bare address is a /32 or /128)."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    entries = value.split(",") if isinstance(value, str) else value
    for entry in (part.strip().lower().rstrip(".") for part in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError as exc:
            if "/" in entry:
                raise SettingsError(f"INTERLOCK_TOOLS_ALLOW_HOSTS: {entry!r} is not a valid CIDR") from exc
            hosts.add(entry)
    return AllowList(frozenset(hosts), tuple(networks))


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` must not be reached from a tool, or None if it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return address_problem(mapped)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to call it (``host``)."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"

    def pinned_url(self, parts: SplitResult) -> str:
        """The URL with the host replaced by the checked address."""
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.scheme}://{literal}:{self.port}{path}{query}"


def target_of(url: str) -> str:
    """The circuit-breaker key of a URL: its host and port, lower-cased."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def check_url(url: str, *, allow: AllowList) -> Target:
    """Resolve ``url``'s host and refuse it unless every address it has may be reached."""
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - parses a bracketed IPv6 host, which may be malformed
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {url!r} ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs may be fetched, not {scheme or 'a bare path'!r}: {url}")
    if parts.username or parts.password:
        raise UnsafeURL(f"URLs with credentials are not fetched: {parts.hostname}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeURL(f"the URL has no host: {url}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL(f"the URL has an invalid port: {url}") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN,):
            raise HostUnavailable(f"could not resolve {host} right now: {exc}") from exc
        raise PermanentError(f"the host {host} does not resolve: {exc}") from exc
    except UnicodeError as exc:
        raise UnsafeURL(f"the host name {host!r} is not valid") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise PermanentError(f"the host {host} has no address")
    if not allow.allows_host(host):
        for address in addresses:
            problem = address_problem(address)
            if problem and not allow.allows_address(address):
                where = f"{host} is" if host == str(address) else f"{host} resolves to {address},"
                raise UnsafeURL(f"refused {url}: {where} {problem} (INTERLOCK_TOOLS_ALLOW_HOSTS can allow it)")
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


class _PinnedTLS(HTTPAdapter):
    """HTTPS to an address while SNI and certificate verification use the host name."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["server_hostname"] = self._hostname
        pool_kwargs["assert_hostname"] = self._hostname
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def _send(
    target: Target, *, params: Mapping[str, Any] | None, headers: Mapping[str, str], timeout: float
) -> requests.Response:
    parts = urlsplit(target.url)
    with requests.Session() as session:
        session.trust_env = False  # no proxies or .netrc from the environment
        session.mount("http://", HTTPAdapter(max_retries=0))
        if target.scheme == "https":
            session.mount("https://", _PinnedTLS(target.host))
        request_headers = {"User-Agent": USER_AGENT, **headers, "Host": target.netloc}
        return session.get(
            target.pinned_url(parts),
            params=params,
            headers=request_headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )


def guarded_get(
    url: str,
    *,
    settings: Settings,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """GET ``url`` through the guard, following redirects hop by hop; the body is not read yet.

    The caller reads (a capped amount of) the body and closes the response.
    """
    allow = parse_allow_hosts(settings.tools_allow_hosts)
    current = url
    for _hop in range(settings.http_max_redirects + 1):
        target = check_url(current, allow=allow)
        timeout = call_timeout(settings.http_timeout)
        try:
            response = _send(target, params=params, headers=headers or {}, timeout=timeout)
        except requests.exceptions.SSLError as exc:
            raise PermanentError(f"TLS failed for {target.host}: {exc}") from exc
        except requests.Timeout as exc:
            check_interrupted()  # the task's time ran out, not the host's patience
            raise HostUnavailable(f"{target.host} did not answer within {timeout:g}s") from exc
        except requests.RequestException as exc:
            raise HostUnavailable(f"{target.host} is unreachable: {type(exc).__name__}") from exc
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            response.url = current  # report the name, not the pinned address
            return response
        response.close()
        current = urljoin(current, location)
        params = None  # the query string of the redirect target is its own
        logger.info("following redirect %s -> %s", target.url, current)
    raise PermanentError(f"more than {settings.http_max_redirects} redirects from {url}")


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def raise_for_status(response: requests.Response, *, what: str) -> None:
    """Map an HTTP error status to Interlock's errors (the response is closed first)."""
    status = response.status_code
    if status < 400:
        return
    response.close()
    reason = f"{what} answered HTTP {status} {response.reason or ''}".rstrip()
    if status == 429:
        raise TransientError(
            f"{reason} (rate limited)", retry_after=retry_after_seconds(response.headers.get("Retry-After"))
        )
    if status >= 500:
        raise HostUnavailable(reason, retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    raise PermanentError(reason)


def read_capped(response: requests.Response, *, limit: int, what: str, setting: str) -> bytes:
    """Read the body, refusing it as soon as it is known to exceed ``limit`` bytes."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        response.close()
        raise PermanentError(f"{what} is {int(declared)} bytes, over the {limit}-byte limit ({setting})")
    body = bytearray()
    try:
        for chunk in _arriving(response):
            check_interrupted()
            body.extend(chunk)
            if len(body) > limit:
                raise PermanentError(f"{what} is larger than the {limit}-byte limit ({setting})")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        check_interrupted()
        raise HostUnavailable(f"reading {what} failed: {type(exc).__name__}") from exc
    finally:
        response.close()
    return bytes(body)


def _arriving(response: requests.Response) -> Iterator[bytes]:
    """The (decoded) body as it arrives: each piece is what one read from the socket got, so a
    host that trickles its answer is seen between pieces rather than after a whole buffer."""
    while chunk := response.raw.read1(READ_CHUNK, decode_content=True):
        yield chunk
