"""Who may use the web UI: the Host and Origin checks, as one ASGI middleware in front of every route.

Threat model (the README's "Web UI" section says the same to users). The server binds 127.0.0.1 unless told otherwise,
so only programs on this machine can connect. The one remote party that can still reach it is a web page the user
visits in a browser on this machine; the browser will send requests for that page to 127.0.0.1. Three ways and what
stops each:
  * a cross-site POST (a form, or fetch in "no-cors" mode) that queues jobs: such requests carry the page's Origin
    header, which is refused (403) unless it is the server's own origin or one named with --allow-origin; and
    /api/jobs takes only Content-Type application/json (app.py, 415 otherwise), which a page on another origin
    cannot send without a CORS preflight that this server never grants;
  * reading results cross-site: no CORS headers are ever sent, so the browser keeps responses from other origins;
  * DNS rebinding (attacker.example re-resolves to 127.0.0.1, and its page becomes "same-origin" with the server):
    the Host header is then attacker.example, which is refused (403). Accepted Host names: the loopback names when
    bound to loopback; the bound address and this machine's names when bound to one address; any IP literal plus this
    machine's names on a wildcard bind (0.0.0.0, ::); and the hosts of --allow-origin (a reverse proxy's public name).
What is not defended: other users of this machine (they can connect to 127.0.0.1 like any local program), and anyone
on the network once --host exposes the server (`ddpm serve` warns). Hence no per-process token: it would only stop
local users, who on a shared machine can read the run directory anyway.
Clickjacking: every response forbids framing (frame-ancestors 'none').
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ddpm.common.errors import UserError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


def parse_origin(text: str) -> str:
    """'https://Ddpm.example.org:8443/' -> 'https://ddpm.example.org:8443': an origin as browsers send it (scheme,
    host, port if not the scheme's default; no path). UserError for anything else (the value of --allow-origin)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username):
        raise UserError(f"--allow-origin {text!r} is not an origin; write scheme://host[:port], "
                        "e.g. https://ddpm.example.org or http://192.168.1.5:7860")
    default = {"http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header 'name[:port]' or '[v6][:port]' -> (lower-case name without brackets, port); None if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _machine_names() -> set[str]:
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return names


@dataclass(frozen=True)
class Access:
    """Which Host names (with the server's port) and which Origins the server accepts."""

    port: int
    names: frozenset[str]         # accepted Host names, lower-case, IPv6 without brackets
    any_ip: bool                  # a wildcard bind: any IP literal is a name of this server
    origins: frozenset[str]       # --allow-origin, normalised by parse_origin
    proxied_hosts: frozenset[str]  # 'name[:port]' of those origins: a proxy may pass its public Host through

    @classmethod
    def for_server(cls, host: str, port: int, allow_origins: tuple[str, ...] = ()) -> Access:
        host = host.strip("[]").lower()
        if host in LOOPBACK_NAMES:
            names = set(LOOPBACK_NAMES)
        elif host in WILDCARDS:
            names = set(LOOPBACK_NAMES) | _machine_names()
        else:
            names = {host} | _machine_names()
        origins = frozenset(parse_origin(o) for o in allow_origins)
        return cls(port, frozenset(names), host in WILDCARDS, origins,
                   frozenset(o.split("://", 1)[1] for o in origins))

    def host_refusal(self, host_header: str) -> str | None:
        """Why a request with this Host header is refused, or None."""
        if host_header.lower() in self.proxied_hosts:
            return None
        split = _split_host(host_header)
        if split is None:
            return f"malformed Host header {host_header[:80]!r}"
        name, port = split
        if (port or 80) != self.port:
            return f"Host {host_header[:80]!r} names another port than this server's {self.port}"
        if name in self.names or (self.any_ip and _is_ip(name)):
            return None
        return (f"Host {host_header[:80]!r} is not a name of this server (a DNS rebinding attempt?); open "
                f"http://127.0.0.1:{self.port}/ or start ddpm serve with --allow-origin")

    def origin_refusal(self, origin: str, host_header: str) -> str | None:
        """Why a request from this Origin is refused, or None. Same-origin means the origin names the Host the
        request was sent to (already checked); other origins only when --allow-origin names them."""
        if origin.lower() in (f"http://{host_header}".lower(), f"https://{host_header}".lower()):
            return None
        try:
            if parse_origin(origin) in self.origins:
                return None
        except UserError:
            pass
        return (f"requests from {origin[:80]!r} are refused: this server answers its own page only "
                "(start ddpm serve with --allow-origin ORIGIN to allow another site)")


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class Guard:
    """ASGI middleware: HTTP requests whose Host or Origin Access refuses get 403 {"error": ...} and never reach the
    app; every response gets SECURITY_HEADERS. (Pure ASGI rather than Starlette's BaseHTTPMiddleware, which buffers
    streamed responses; lifespan events pass through.)"""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        reason = self.access.host_refusal(host)
        if reason is None and "origin" in headers:
            reason = self.access.origin_refusal(headers["origin"], host)
        if reason is not None:
            await _send_json(send, 403, {"error": reason})
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": data})
