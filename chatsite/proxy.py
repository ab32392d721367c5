"""The client's address and scheme behind a load balancer, believed only from trusted proxies.

daphne's ``--proxy-headers`` believes ``X-Forwarded-For`` from any peer, so a client talking to a
node directly could claim any address. ``TrustedProxyMiddleware`` (the outermost layer of
``chatsite.asgi.application``) believes the headers only when the connection comes from a proxy
listed in the environment variable ``TRUSTED_PROXIES``: comma-separated IP addresses or CIDR
networks, e.g. ``127.0.0.1`` or ``10.0.0.0/8,fd00::/8``. Default: empty, trust nobody.

For an ``http`` or ``websocket`` scope whose ``scope["client"]`` host is a trusted proxy:

- ``scope["client"]`` becomes ``(address, 0)``, where ``address`` is the right-most address in
  ``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address it saw,
  so everything left of that one was written by the client and may be forged). When every
  address is a trusted proxy, the left-most one is used. No header, an empty one, or an entry
  that is not an IP address (``unknown``) reached before an untrusted one leaves the client as
  it is (the proxy's address).
- ``scope["scheme"]`` follows ``X-Forwarded-Proto`` (the last value when there are several):
  ``https``/``wss`` make a secure scope (``https`` for HTTP, ``wss`` for WebSocket), ``http``/``ws``
  a plain one; other values are ignored. Django's ``request.is_secure()`` reads this scheme, so
  ``SECURE_PROXY_SSL_HEADER`` is not set (it would believe the header from any peer).

From a peer that is not a trusted proxy, ``scope["root_path"]`` is emptied: daphne takes it from a
``Daphne-Root-Path`` request header, which only a proxy may set (the site is served at the root).
Any other scope (``lifespan``, or such a peer's scope without a root path) passes through
unchanged. The scope is copied, never changed in place.
"""

import ipaddress
import os
from collections.abc import Iterable

from chatsite.logcontext import valid_request_id

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SECURE = {"http": "https", "websocket": "wss"}
_PLAIN = {"http": "http", "websocket": "ws"}


def parse_trusted_proxies(value: str | Iterable[str]) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` (or a list of such items) as networks; ``ValueError`` names a
    bad item, so a typo fails at start-up instead of silently trusting nobody."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:80``),
    or None when it is not one (``unknown``, an obfuscated identifier, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(raw: str) -> str:
    """The client address that limits count by: ``raw`` (``REMOTE_ADDR``, an ASGI scope's
    client) normalised, an IPv6 one as its /64 (one host holds a whole /64); ``raw`` itself
    when it is not an address."""
    address = parse_address(raw)
    if address is None:
        return raw
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _header_values(scope, name: bytes) -> list[str]:
    """All comma-separated values of header ``name`` (repeated headers joined in order)."""
    values = []
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            values.extend(v.strip() for v in value.decode("latin-1").split(","))
    return values


class TrustedProxyMiddleware:
    """ASGI middleware: see the module docstring. ``trusted_proxies`` defaults to the
    environment's ``TRUSTED_PROXIES``."""

    def __init__(self, app, trusted_proxies: str | Iterable[str] | None = None):
        self.app = app
        if trusted_proxies is None:
            trusted_proxies = os.environ.get("TRUSTED_PROXIES", "")
        self.trusted = parse_trusted_proxies(trusted_proxies)

    def is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    def client_address(self, forwarded_for: list[str]) -> str | None:
        """The right-most address not a trusted proxy (see the module docstring), or None."""
        found = None
        for entry in reversed(forwarded_for):
            address = parse_address(entry)
            if address is None:
                return None
            found = address
            if not self.is_trusted(address):
                break
        return None if found is None else str(found)

    _asgi_single_callable = True  # chatsite.asgi_chain: returns the app's awaitable

    def __call__(self, scope, receive, send):
        scope_type = scope.get("type")
        client = scope.get("client")
        from_proxy = (
            bool(self.trusted)
            and scope_type in _SECURE
            and bool(client)
            and self.is_trusted(parse_address(str(client[0])))
        )
        if not from_proxy and scope_type in _SECURE and scope.get("root_path"):
            # daphne takes root_path from a Daphne-Root-Path request header: a proxy's to send.
            # From anyone else it would move Django's URLs under a path of their choosing (and a
            # socket's route off every pattern, a 500): the site is served at the root.
            scope = dict(scope, root_path="")
        if from_proxy:
            scope = dict(scope)
            address = self.client_address(_header_values(scope, b"x-forwarded-for"))
            if address is not None:
                scope["client"] = (address, 0)
            protos = [p.lower() for p in _header_values(scope, b"x-forwarded-proto") if p]
            if protos and protos[-1] in ("https", "wss"):
                scope["scheme"] = _SECURE[scope_type]
            elif protos and protos[-1] in ("http", "ws"):
                scope["scheme"] = _PLAIN[scope_type]
            # The balancer's request id, for the logs (chatsite/logcontext.py): only a trusted
            # proxy's; anyone else's X-Request-ID is ignored and a new id is made.
            ids = _header_values(scope, b"x-request-id")
            if ids and valid_request_id(ids[-1].strip()):
                scope["request_id"] = ids[-1].strip()
        return self.app(scope, receive, send)
