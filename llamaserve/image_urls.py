"""Fetching image URLs without reaching into the server's own network.

Each hop (the URL, then every redirect) is resolved once; unless private addresses are allowed,
every address it resolves to must be public. The connection then goes to that address — the
request's URL carries the IP, with the original Host header and TLS server name, so TLS still
verifies the certificate for the hostname — and no second DNS lookup can answer differently
(DNS rebinding). Every failure to connect, DNS failure, timeout and refused address gives the
same message, so error replies cannot be used to map the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

# host, port -> the addresses it resolves to (tests inject their own)
Resolver = Callable[[str, int], Awaitable[list[str]]]

UNREACHABLE = ("could not fetch the image: the URL is not reachable or not allowed (this "
               "server refuses private, loopback and link-local addresses unless started with "
               "--allow-private-urls)")
# Servers often label images generically; anything else (text/html...) is not an image.
_ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class ImageError(ValueError):
    """An image that cannot be used; the message says why, for the API client."""


class UnreachableError(ImageError):
    """Not fetched: refused address, DNS failure, connection failure or timeout (one message)."""

    def __init__(self) -> None:
        super().__init__(UNREACHABLE)


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 10.0  # seconds, for the whole fetch of one URL, redirects included
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    allow_private: bool = False  # fetch from private, loopback and link-local addresses too


def image_client(timeout: float, **options: object) -> httpx.AsyncClient:
    """The client fetches go through: no proxies from the environment (the address check
    must see where the connection goes) and no pooled connections (a TLS connection verified
    for one hostname is never reused for another on the same address)."""
    return httpx.AsyncClient(timeout=timeout, trust_env=False,
                             limits=httpx.Limits(max_keepalive_connections=0), **options)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(address: str) -> bool:
    """A globally routable unicast address: not private, loopback, link-local, unspecified,
    multicast or reserved, also when wrapped in IPv6 (::ffff:10.0.0.1, 2002:7f00:1::)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def parse_url(url: str) -> httpx.URL:
    """An absolute http(s) URL with a host; ImageError for anything else."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ImageError("the image URL is malformed") from exc
    if parsed.scheme not in ("http", "https"):
        raise ImageError("only data:, http: and https: image URLs are supported")
    if not parsed.host:
        raise ImageError("the image URL has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ImageError("the image URL is malformed")
    return parsed


async def pin(url: httpx.URL, limits: FetchLimits, resolve: Resolver) -> httpx.Request:
    """The GET request for `url`, addressed to one checked IP of its host."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = await resolve(host, port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror, IDNA errors
            raise UnreachableError() from exc
    if not addresses or not (limits.allow_private or all(map(is_public, addresses))):
        raise UnreachableError()
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return httpx.Request("GET", url.copy_with(host=addresses[0].split("%", 1)[0]),
                         headers={"Host": url.netloc.decode("ascii")}, extensions=extensions)


async def fetch(url: str, limits: FetchLimits, client: httpx.AsyncClient,
                resolve: Resolver = system_resolver) -> bytes:
    """GET an http(s) URL, following at most `limits.max_redirects` redirects (each hop
    resolved, checked and pinned), reading at most `limits.max_bytes`, within
    `limits.timeout` in all."""
    try:
        return await asyncio.wait_for(_fetch(url, limits, client, resolve), limits.timeout)
    except (TimeoutError, httpx.TransportError) as exc:
        raise UnreachableError() from exc
    except httpx.HTTPError as exc:  # e.g. too many redirects, decoding errors
        raise ImageError(f"fetching the image failed: {type(exc).__name__}") from exc


async def _fetch(url: str, limits: FetchLimits, client: httpx.AsyncClient,
                 resolve: Resolver) -> bytes:
    for _ in range(limits.max_redirects + 1):
        request = await pin(parse_url(url), limits, resolve)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            return await _body(response, limits.max_bytes)
        finally:
            await response.aclose()
    raise ImageError(f"the URL redirects more than {limits.max_redirects} times")


async def _body(response: httpx.Response, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise ImageError(f"fetching the image failed: HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").lower()
    if content_type and not content_type.startswith(_ACCEPTED_TYPES):
        raise ImageError(f"the URL's content-type is '{content_type}', not an image")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageError(f"the image is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ImageError(f"the image is larger than {max_bytes} bytes")
    return bytes(body)
