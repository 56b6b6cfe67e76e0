"""Fixed-window rate limits kept in the Django cache (Redis in production).

The client address is REMOTE_ADDR, except with BEHIND_PROXY=true: gunicorn then sees
only the proxy on the same machine (every visitor would be 127.0.0.1, and ten signups
would lock out the whole site), so the address is the one the proxy appended to
X-Forwarded-For, its rightmost entry. Entries to its left come from the client and are
never believed.
"""

from __future__ import annotations

import hashlib
import ipaddress

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The visitor's address, as rate limits and consent records count it."""
    remote = request.META.get("REMOTE_ADDR") or None
    if not settings.BEHIND_PROXY:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return remote


def network_key(ip: str | None) -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64 network.

    One IPv6 customer usually holds a whole /64, so counting single addresses would let
    them rotate through billions of them.
    """
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A server listening on [::] sees IPv4 clients as ::ffff:a.b.c.d; their /64 is
        # ::/64, which would put every IPv4 client in one bucket.
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def consume(*, scope: str, key: str, limit: int, period: int) -> bool:
    """Count one hit of `key` in `scope`; False once more than `limit` fall in one window."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"ratelimit:{scope}:{digest}"
    if cache.add(cache_key, 1, timeout=period):
        return True
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add() and incr()
        cache.add(cache_key, 1, timeout=period)
        return True
    return count <= limit
