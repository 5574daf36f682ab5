"""image_urls.py without a model: the address check, pinning, redirects, TLS names, and one
message for every way a fetch cannot reach its URL. Hostnames are resolved by a resolver the
tests inject, so "public" names can point at local servers."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme

from llamaserve.image_urls import (
    UNREACHABLE,
    FetchLimits,
    ImageError,
    UnreachableError,
    fetch,
    image_client,
    is_public,
)

from .builders import image_bytes

PNG = image_bytes()
PUBLIC = "93.184.215.14"


class Resolver:
    """A fake DNS: name → addresses, counting lookups."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


def run_fetch(url: str, resolver: Resolver, handler: Callable[[httpx.Request], httpx.Response]
              | None = None, client: httpx.AsyncClient | None = None, **limits: Any) -> bytes:
    async def go() -> bytes:
        transport = None if handler is None else httpx.MockTransport(handler)
        async with client or image_client(5, transport=transport) as http:
            return await fetch(url, FetchLimits(**limits), http, resolver)

    return asyncio.run(go())


@pytest.mark.parametrize(("address", "public"), [
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False), ("172.16.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("240.0.0.1", False), ("255.255.255.255", False),
    ("::1", False), ("::", False), ("fe80::1%eth0", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("2002:7f00:1::", False), ("ff02::1", False),
    (PUBLIC, True), ("8.8.8.8", True), ("2606:4700::1111", True),
])
def test_only_public_unicast_addresses_pass(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.parametrize(("url", "reason"), [
    ("http://[::1", "malformed"), ("http://x:99999/a.png", "malformed"), ("http://", "no host"),
    ("ftp://x/a.png", "only data:, http: and https:"), ("file:///etc/passwd", "only data:"),
    ("a.png", "only data:"),
])
def test_malformed_urls_say_so(url: str, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        run_fetch(url, Resolver({}), lambda request: httpx.Response(200))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.png", "http://[::1]/a.png", "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:10.0.0.1]/a.png", "http://internal.test/a.png", "http://mixed.test/a.png",
    "http://nowhere.test/a.png",
])
def test_private_addresses_and_names_resolving_to_them_are_refused(url: str) -> None:
    resolver = Resolver({"internal.test": ["10.0.0.5"], "mixed.test": [PUBLIC, "127.0.0.1"]})
    seen: list[httpx.Request] = []
    with pytest.raises(UnreachableError) as caught:
        run_fetch(url, resolver, lambda request: seen.append(request) or httpx.Response(200))
    assert str(caught.value) == UNREACHABLE
    assert not seen  # refused before any connection


def pinned_handler(seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["host"] == "public.test":
            return httpx.Response(302, headers={"location": "http://internal.test/secret.png"})
        if request.headers["host"] == "hop.test":
            return httpx.Response(302, headers={"location": "http://127.0.0.1/secret.png"})
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    return handler


@pytest.mark.parametrize("start", ["http://public.test/a.png", "http://hop.test/a.png"])
def test_a_redirect_to_a_private_address_is_refused(start: str) -> None:
    resolver = Resolver({"public.test": [PUBLIC], "hop.test": [PUBLIC],
                         "internal.test": ["10.0.0.5"]})
    seen: list[httpx.Request] = []
    with pytest.raises(UnreachableError):
        run_fetch(start, resolver, pinned_handler(seen))
    assert [request.url.host for request in seen] == [PUBLIC]


def test_the_connection_goes_to_the_address_checked_with_one_lookup() -> None:
    # A rebinding DNS answers public first and private after: there is no second lookup.
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    resolver = Resolver({})

    async def rebinding(host: str, port: int) -> list[str]:
        resolver.lookups.append(host)
        return next(answers)

    seen: list[httpx.Request] = []

    async def go() -> bytes:
        async with image_client(5, transport=httpx.MockTransport(pinned_handler(seen))) as http:
            return await fetch("http://cdn.test:8080/a.png", FetchLimits(), http, rebinding)

    assert asyncio.run(go()) == PNG
    assert resolver.lookups == ["cdn.test"]
    [request] = seen
    assert (request.url.host, request.url.port) == (PUBLIC, 8080)
    assert request.headers["host"] == "cdn.test:8080"


def test_allow_private_fetches_local_addresses() -> None:
    seen: list[httpx.Request] = []
    resolver = Resolver({"public.test": [PUBLIC], "internal.test": ["10.0.0.5"]})
    assert run_fetch("http://public.test/a.png", resolver, pinned_handler(seen),
                     allow_private=True) == PNG
    assert [request.url.host for request in seen] == [PUBLIC, "10.0.0.5"]


def test_body_without_content_length_is_cut_at_the_limit() -> None:
    async def chunks():
        for _ in range(2):
            yield b"x" * 600

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(), headers={"content-type": "image/png"})

    with pytest.raises(ImageError, match="larger than 1000 bytes"):
        run_fetch(f"http://{PUBLIC}/a.png", Resolver({}), handler, max_bytes=1000)


class Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def tls() -> Iterator[tuple[int, ssl.SSLContext]]:
    """An HTTPS server on 127.0.0.1 whose certificate names images.test; the client context
    that trusts its CA."""
    authority = trustme.CA()
    web = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("images.test").configure_cert(context)
    web.socket = context.wrap_socket(web.socket, server_side=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    yield web.server_address[1], client_context
    web.shutdown()
    web.server_close()


def test_tls_still_verifies_the_hostname_of_a_pinned_address(
    tls: tuple[int, ssl.SSLContext]
) -> None:
    port, context = tls
    resolver = Resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})

    def get(host: str) -> bytes:
        return run_fetch(f"https://{host}:{port}/a.png", resolver,
                         client=image_client(5, verify=context), allow_private=True)

    assert get("images.test") == PNG
    with pytest.raises(UnreachableError):  # same address, a name the certificate lacks
        get("other.test")


def test_closed_port_and_silent_port_give_the_same_message() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        messages = []
        for port in (closed_port, silent.getsockname()[1]):
            with pytest.raises(UnreachableError) as caught:
                run_fetch(f"http://127.0.0.1:{port}/a.png", Resolver({}), allow_private=True,
                          timeout=0.5)
            messages.append(str(caught.value))
    assert messages == [UNREACHABLE, UNREACHABLE]
