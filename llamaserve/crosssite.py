"""Keep web pages from driving a local server: the `Host` check against DNS rebinding and the
JSON-only rule for bodies sent by browsers.

A page in the user's browser may POST to http://127.0.0.1:8000 without a CORS preflight when
the request is "simple" (Content-Type text/plain, form-urlencoded or multipart, or none); it
cannot read the answer, but the model runs (and /api/pull, /api/delete act). A DNS-rebinding
page goes further: its own host name resolves to 127.0.0.1, so the browser treats the server
as same-origin and reads the answers too; only the `Host` header still names the attacker's
domain.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cache

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .protocols.anthropic import errors as anthropic_errors
from .protocols.openai.errors import error_body

# Names that only this machine or its own network resolve, never a public DNS answer a
# rebinding page controls (as Ollama's allowedHost: localhost, .localhost, .local, .internal)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
_BODYLESS = {"GET", "HEAD", "OPTIONS"}


def error_response(path: str, status: int, message: str, code: str) -> JSONResponse:
    """An error in the shape of the protocol that owns `path`."""
    if anthropic_errors.owns(path):
        return JSONResponse(anthropic_errors.error_body(status, message), status)
    if path == "/api" or path.startswith("/api/"):
        return JSONResponse({"error": message}, status)
    return JSONResponse(error_body(status, message, None, code), status)


def is_loopback_bind(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@cache
def _machine_names() -> frozenset[str]:
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    try:
        names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return frozenset(names)


def split_host(header: str) -> str:
    """The name or address of a Host header: `[::1]:8000` → `::1`, `a.b:80` → `a.b`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def host_allowed(header: str, extra: frozenset[str]) -> bool:
    """Ollama's rule for a server bound to loopback: IP literals of this machine or its
    private networks, `localhost`, local-only suffixes, this machine's names; plus `extra`."""
    host = split_host(header)
    if host in ("", "localhost") or host in extra or host.endswith(_LOCAL_SUFFIXES):
        return True
    if host in _machine_names():
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def from_browser(headers: dict[bytes, bytes]) -> bool:
    """Browsers send `Origin` on every cross-origin POST (and `Sec-Fetch-*` on every
    request); curl, SDKs and other programs send neither."""
    return any(name in headers for name in (b"origin", b"sec-fetch-mode", b"sec-fetch-site"))


def is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                            and media.endswith(b"+json"))


class CrossSiteMiddleware:
    """403 for a `Host` this server does not answer to (when bound to loopback); 415 for a
    browser's request body that is not JSON (a CORS-simple request no preflight guards)."""

    def __init__(self, app: ASGIApp, bind_host: str, allowed_hosts: list[str]) -> None:
        self.app = app
        self.check_host = is_loopback_bind(bind_host) and "*" not in allowed_hosts
        self.allowed = frozenset(split_host(name) for name in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.check_host and not host_allowed(host, self.allowed):
            message = (f"Host '{host}' is not allowed: this server answers requests for its "
                       "own address and localhost (start it with --allowed-host NAME to add "
                       "a name).")
            response = error_response(scope["path"], 403, message, "host_not_allowed")
        elif (scope["method"] not in _BODYLESS and from_browser(headers)
              and not is_json(headers.get(b"content-type"))):
            message = ("Send the body as JSON with 'Content-Type: application/json' (browsers "
                       "may not send other types to this server).")
            response = error_response(scope["path"], 415, message, "unsupported_media_type")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
