"""Who may talk to the web UI: loopback by default, a token when remote, no cross-site writes.

The rules, in order, for every HTTP request:

1. Local mode (bound to a loopback address): the ``Host`` header must be
   ``localhost`` or a loopback IP address, so a page on some other site cannot
   reach us through DNS rebinding.
2. Remote mode (``--allow-remote``): every request carries the access token,
   as the ``X-Tdrun-Token`` header, ``Authorization: Bearer``, the session
   cookie, or once as ``?token=`` (answered with the cookie and a redirect to
   the same path of this server).
3. Requests that change something (anything but GET/HEAD/OPTIONS) must come
   from our own origin (``Origin`` and ``Sec-Fetch-Site`` checked when the
   browser sends them) and carry the token or the same-site cookie.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

__all__ = ["Guard", "cookie_name", "new_token", "is_loopback", "safe_location"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    return secrets.token_urlsafe(24)


def cookie_name(token: str) -> str:
    """Per-server cookie name: browsers share cookies across ports of one host."""
    return "tdrun_" + hashlib.sha256(token.encode()).hexdigest()[:10]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and for IP addresses that are loopback, nothing else.

    ``127.0.0.1.evil.example`` is a name any DNS server may point at us
    (rebinding), so only a literal address is judged by its value:
    ``127.0.0.0/8``, ``::1`` and IPv4-mapped ``::ffff:127.x.y.z``, with or
    without the brackets of a URL.
    """
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


_PORT = re.compile(r"^:[0-9]{1,5}$")


def _hostname(host_header: str) -> str | None:
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``; ``"[::1]:80"`` -> ``"[::1]"``; None when malformed."""
    if host_header.startswith("["):
        end = host_header.find("]")
        rest = host_header[end + 1:] if end != -1 else None
        if rest is None or (rest and not _PORT.match(rest)):
            return None
        return host_header[: end + 1]
    name, colon, port = host_header.rpartition(":")
    if not colon:
        return host_header
    return name if _PORT.match(colon + port) else None


def safe_location(path: str, query: str = "") -> str:
    """A redirect target that can only be a path of this server.

    A request for ``//evil.example/`` has that path; sent back as it is, a
    browser reads the location as another host. Percent-encoding everything
    but plain path characters also turns ``\\``, tabs and other bytes
    browsers drop or rewrite into inert text.
    """
    quoted = quote(path, safe="/:@!$&'()*+,;=-._~")
    location = "/" + quoted.lstrip("/")
    return location + (f"?{query}" if query else "")


class Guard:
    """ASGI middleware applying the rules in the module docstring."""

    def __init__(self, app, *, token: str, remote: bool) -> None:
        self.app = app
        self.token = token
        self.remote = remote
        self.cookie = cookie_name(token)

    def _valid(self, value: str | None) -> bool:
        return bool(value) and secrets.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        host = headers.get("host", "")
        hostname = _hostname(host)
        if not self.remote and (hostname is None or not is_loopback(hostname)):
            await _refuse(send, 403, f"host {host!r} is not allowed: this server only answers "
                                     "on its loopback address")
            return
        authed = self._authenticated(headers)
        if self.remote and not authed:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if method == "GET" and self._valid(query.get("token")):
                await self._redirect_with_cookie(scope, query, send)
                return
            await _refuse(send, 401, "this server needs its access token: open the URL printed "
                                     "when it started (with ?token=...)")
            return
        if method not in _SAFE_METHODS:
            origin = headers.get("origin")
            expected = f"{scope.get('scheme', 'http')}://{host}"
            if origin is not None and origin != expected:
                await _refuse(send, 403, f"cross-site request refused: origin {origin!r} "
                                         f"is not {expected!r}")
                return
            site = headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):
                await _refuse(send, 403, f"cross-site request refused: sec-fetch-site is {site!r}")
                return
            if not authed:
                await _refuse(send, 403, "request refused: missing the access token "
                                         "(X-Tdrun-Token header or the page's cookie)")
                return
        await self.app(scope, receive, send)

    def _authenticated(self, headers: dict[str, str]) -> bool:
        if self._valid(headers.get("x-tdrun-token")):
            return True
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self._valid(auth[7:].strip()):
            return True
        raw = headers.get("cookie")
        if raw:
            jar = SimpleCookie()
            try:
                jar.load(raw)
            except Exception:  # a malformed cookie header is simply not a token
                return False
            morsel = jar.get(self.cookie)
            return morsel is not None and self._valid(morsel.value)
        return False

    async def _redirect_with_cookie(self, scope, query: dict[str, str], send) -> None:
        query.pop("token", None)
        location = safe_location(scope.get("root_path", "") + scope["path"], urlencode(query))
        await send({
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"set-cookie", self.set_cookie_header().encode("latin-1")),
                (b"content-length", b"0"),
            ],
        })
        await send({"type": "http.response.body", "body": b""})

    def set_cookie_header(self) -> str:
        return f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
