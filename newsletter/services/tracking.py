"""Opens and clicks: the signed pixel and redirect tokens, telling readers from
machines, and recording what they did.

Who calls it: `render_article_email` (`track_links`, `add_open_pixel`) once per segment,
the per-reader personalisation (`delivery_token`) once per message, the pixel and
redirect answered by `newsletter.middleware.TrackingMiddleware` (`open_token_delivery`,
`click_target`, `record`), the flush task (`flush_buffered_events`), and the reader's
export and erasure (`export_engagement_of`, `erase_engagement_of`).

Tokens carry no reader id: the pixel's names a delivery (one email of one send), signed
with HMAC-SHA256 under a key derived from SECRET_KEY, so it cannot be guessed or
altered. A link's token is signed once per article (the link's id and its URL: the
redirect goes only to the URL signed into it, without a database read), and the
delivery's part is put in per reader by the same placeholder replacement as the
greeting: one HMAC per message, however many links.

Recording, when the cache is Redis, appends the hit to a list in the process, which a
thread pushes onto a Redis list every TRACKING_PUSH_INTERVAL seconds (`_Outbox`), and a
beat task writes that list to the database in batches (`flush_buffered_events`); on
the embedded default (no Redis) it is one short transaction in the request itself.
Both go through `record_events`, which classifies a batch of hits and writes them in a
few statements (one INSERT per kind, one UPDATE for readers' first opens and clicks).
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape, unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db import transaction
from django.db.models import Case, Value, When
from django.utils import timezone
from redis.exceptions import RedisError

from newsletter.models import (
    Article,
    ClickEvent,
    Delivery,
    Engagement,
    EngagementRollupMark,
    MachineReason,
    OpenEvent,
    TrackedLink,
)
from publication.models import Publication

logger = logging.getLogger(__name__)

# Put in the rendered email wherever the delivery's token goes (see email_rendering).
TRACKING_PLACEHOLDER = "@@broadside-tracking@@"
OPEN_PATH_PREFIX = "/o/"
CLICK_PATH_PREFIX = "/r/"
_MAC_BYTES = 9  # 72 bits: 12 base64url characters
_MAC_CHARS = 12

# A 1x1 transparent GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=4)
def _key(secret: str, purpose: str) -> bytes:
    return hashlib.sha256(f"broadside.tracking.{purpose}:{secret}".encode()).digest()


def _mac(purpose: str, message: bytes) -> str:
    digest = hmac.new(_key(settings.SECRET_KEY, purpose), message, hashlib.sha256).digest()
    return _b64(digest[:_MAC_BYTES])


def delivery_token(delivery_id: int) -> str:
    """The delivery's part of the pixel's and every link's URL (base64url, no dots)."""
    ident = _b64(delivery_id.to_bytes(8, "big").lstrip(b"\0") or b"\0")
    return _mac("delivery", ident.encode()) + ident


def _signed(mac: str, purpose: str, message: str) -> bool:
    """Whether `mac` signs `message`. Tokens are base64url: anything else (a URL may
    carry any text, and `compare_digest` refuses a non-ASCII str) is simply not signed."""
    if not (mac.isascii() and message.isascii()):
        return False
    return hmac.compare_digest(mac.encode(), _mac(purpose, message.encode()).encode())


def token_delivery(token: str) -> int | None:
    """The delivery id signed into `delivery_token`'s result; None if tampered."""
    mac, ident = token[:_MAC_CHARS], token[_MAC_CHARS:]
    if not ident or len(ident) > 11 or not _signed(mac, "delivery", ident):
        return None
    try:
        return int.from_bytes(_unb64(ident), "big")
    except ValueError:
        return None


def link_token(*, link_id: int, url: str) -> str:
    """The article's part of a rewritten link: the link and its URL, signed."""
    payload = _b64(f"{link_id}:{url}".encode())
    return f"{payload}.{_mac('link', payload.encode())}"


@dataclass(frozen=True)
class ClickTarget:
    link_id: int
    url: str
    delivery_id: int


def click_target(token: str) -> ClickTarget | None:
    """What a redirect token (`<link part>.<delivery part>`) says; None if tampered."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload, mac, delivery_part = parts
    if not _signed(mac, "link", payload):
        return None
    delivery_id = token_delivery(delivery_part)
    if delivery_id is None:
        return None
    try:
        link_id, _, url = _unb64(payload).decode().partition(":")
        return ClickTarget(link_id=int(link_id), url=url, delivery_id=delivery_id)
    except ValueError:
        return None


def open_token_delivery(token: str) -> int | None:
    """The delivery of an open pixel's token (`<delivery part>.gif`); None if tampered."""
    if not token.endswith(".gif"):
        return None
    return token_delivery(token.removesuffix(".gif"))


# --- Rewriting the email, once per article and segment --------------------------------

# An <a> start tag as the CSS inliner (html5ever's serialiser) writes it: attribute
# values always in double quotes, a quote inside one as &quot;. Values may hold `>`.
_ANCHOR_HREF = re.compile(r'(<a\b(?:\s+[^\s"\'>/=]+(?:="[^"]*")?)*?\s+href=")([^"]*)(")', re.I)


# What a browser strips from both ends of an href before following it (the URL
# standard's "C0 control or space"; HTML's ASCII whitespace is among them).
_URL_SPACE = "".join(map(chr, range(0x21)))
# The site's own pages where a reader manages or ends their subscription (and signs in
# to do so): the way out of tracking is never itself tracked.
_OWN_UNTRACKED_PATHS = ("/account/", "/accounts/", "/unsubscribe/")


def _own_page(url: str) -> bool:
    site = urlsplit(settings.SITE_URL)
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed host ("http://[x"): not the site's
        return False
    if parts.netloc.lower() != site.netloc.lower():
        return False
    path = parts.path[len(site.path.rstrip("/")) :] if site.path.strip("/") else parts.path
    return (path.rstrip("/") + "/").lower().startswith(_OWN_UNTRACKED_PATHS)


def _untracked(url: str) -> bool:
    """Links left as they are: anything not on the web, the site's account, sign-in and
    unsubscribe pages (RFC 8058 wants the unsubscribe link to work as sent, and a reader
    managing or leaving is not a click), and any other per-reader value."""
    return (
        not url.lower().startswith(("http://", "https://"))
        or "@@broadside-" in url
        or _own_page(url)
    )


def track_links(*, html: str, article: Article) -> str:
    """Every web link of the email's HTML through the signed redirect `/r/<token>/`.

    One TrackedLink per distinct URL of the article (made here, on first use). The
    delivery's part of each token is the placeholder, filled in per reader. An href's
    surrounding spaces are stripped first, as a browser does.
    """
    urls = [unescape(m.group(2)).strip(_URL_SPACE) for m in _ANCHOR_HREF.finditer(html)]
    wanted = {url for url in urls if not _untracked(url)}
    if not wanted:
        return html
    digests = {url: hashlib.sha256(url.encode()).hexdigest() for url in wanted}
    TrackedLink.objects.bulk_create(
        [TrackedLink(article=article, url=url, digest=digest) for url, digest in digests.items()],
        ignore_conflicts=True,
    )
    ids = dict(
        TrackedLink.objects.filter(article=article, digest__in=digests.values()).values_list(
            "digest", "pk"
        )
    )
    site = settings.SITE_URL

    def rewrite(match: re.Match[str]) -> str:
        url = unescape(match.group(2)).strip(_URL_SPACE)
        if url not in wanted:
            return match.group(0)
        token = link_token(link_id=ids[digests[url]], url=url)
        href = f"{site}{CLICK_PATH_PREFIX}{token}.{TRACKING_PLACEHOLDER}/"
        return f"{match.group(1)}{escape(href)}{match.group(3)}"

    return _ANCHOR_HREF.sub(rewrite, html)


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE | re.ASCII)


def add_open_pixel(html: str) -> str:
    """The open pixel, last in the body (a client that stops loading images early still
    shows the email)."""
    pixel = (
        f'<img src="{settings.SITE_URL}{OPEN_PATH_PREFIX}{TRACKING_PLACEHOLDER}.gif" '
        'width="1" height="1" alt="" '
        'style="display: block; width: 1px; height: 1px; border: 0; overflow: hidden;">'
    )
    # Found in the text as it is: `html.lower()` is not always as long as `html` ("İ"
    # lowers to two characters), so an index into it can land anywhere in the original.
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]


# --- Telling readers from machines -----------------------------------------------------

# Apple Mail Privacy Protection fetches every remote image of a message through Apple's
# relays when the message arrives, whether or not the reader opens it. Apple documents
# the relays' egress addresses (the iCloud Private Relay infrastructure that MPP shares)
# at https://mask-api.icloud.com/egress-ip-ranges.csv, linked from "Prepare your network
# or web server for iCloud Private Relay":
# https://developer.apple.com/support/prepare-your-network-for-icloud-private-relay/
# That list has tens of thousands of ranges and changes; point
# TRACKING_APPLE_PROXY_NETWORKS_FILE at a downloaded copy. Built in: Apple's own
# allocation, 17.0.0.0/8. The proxy's fetches also send the bare user agent
# "Mozilla/5.0", which no browser or mail client sends by itself.
APPLE_PROXY_USER_AGENT = "Mozilla/5.0"
_APPLE_NETWORKS = ("17.0.0.0/8",)

# Link checkers of mail gateways and security suites, and generic HTTP clients: they
# follow links (and fetch images) on delivery, before any person does. Matched,
# case-insensitively, as whole words of the user agent (an entry ending in "/" as the
# start of a product token, "Java/17"), never inside another word: "bot" is not the
# phone maker CUBOT, "java/" not "myjava/".
SCANNER_AGENTS = (
    "barracuda",
    "proofpoint",
    "mimecast",
    "symantec",
    "messagelabs",
    "trendmicro",
    "trend micro",
    "sophos",
    "fireeye",
    "forcepoint",
    "ironport",
    "cisco",
    "safelinks",
    "microsoft office protocol discovery",
    "bingpreview",
    "urlscan",
    "virustotal",
    "bot",
    "crawler",
    "spider",
    "scanner",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww-perl",
    "headlesschrome",
    "phantomjs",
)
# Crawlers name themselves in a product token ending in one of these words, with a
# version: "Googlebot/2.1", "AhrefsBot/7.0", "YandexSpider/3.0".
_CRAWLER_PRODUCT = r"[a-z0-9_-]*(?:bot|crawler|spider)/"
_SCANNER_RE = re.compile(
    "|".join(
        [
            rf"(?<![a-z0-9]){re.escape(agent)}" + ("" if agent.endswith("/") else "(?![a-z0-9])")
            for agent in SCANNER_AGENTS
        ]
        + [_CRAWLER_PRODUCT]
    ),
    re.I,
)
# A burst: this many different links of one delivery followed within BURST_SECONDS is
# a scanner following every link, not a person.
BURST_LINKS = 3
BURST_SECONDS = 1.0


@functools.lru_cache(maxsize=4)
def _apple_networks(
    path: str,
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], ...]:
    """Apple's relay networks (built in, and the documented CSV: `prefix,country,...`),
    sorted for bisection, one list per IP version."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        ipaddress.ip_network(n) for n in _APPLE_NETWORKS
    ]
    if path:
        for line in Path(path).read_text().splitlines():
            prefix = line.split(",", 1)[0].strip()
            if prefix:
                networks.append(ipaddress.ip_network(prefix, strict=False))
    v4 = sorted(ipaddress.collapse_addresses(n for n in networks if n.version == 4))
    v6 = sorted(ipaddress.collapse_addresses(n for n in networks if n.version == 6))
    return v4, v6  # type: ignore[return-value]


def is_apple_proxy_address(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # "::ffff:17.1.2.3" from a dual-stack listener
    v4, v6 = _apple_networks(settings.TRACKING_APPLE_PROXY_NETWORKS_FILE)
    networks: list[Any] = v4 if address.version == 4 else v6
    low, high = 0, len(networks)
    while low < high:  # the last network starting at or before the address
        middle = (low + high) // 2
        if networks[middle].network_address <= address:
            low = middle + 1
        else:
            high = middle
    return low > 0 and address in networks[low - 1]


def _scanner_agent(user_agent: str) -> bool:
    """A scanner's or an HTTP library's agent, or none at all (every browser and mail
    client sends one)."""
    return not user_agent.strip() or _SCANNER_RE.search(user_agent) is not None


def classify_open(
    *, user_agent: str, ip: str, at: datetime, sent_at: datetime | None, method: str = "GET"
) -> str:
    """The machine reason of a pixel fetch, or "" for one that looks like a reader's."""
    if user_agent.strip().lower() == APPLE_PROXY_USER_AGENT.lower() or is_apple_proxy_address(ip):
        return MachineReason.APPLE_PROXY
    if method == "HEAD":  # no image is shown for a HEAD: a checker, not a reader
        return MachineReason.HEAD
    if _scanner_agent(user_agent):
        return MachineReason.SCANNER
    if sent_at is not None and at - sent_at < timedelta(seconds=settings.TRACKING_PREFETCH_SECONDS):
        return MachineReason.PREFETCH
    return MachineReason.NONE


def classify_click(*, user_agent: str, method: str) -> str:
    """The machine reason of one redirect request by itself (bursts are found when it
    is recorded, against the delivery's other clicks), or ""."""
    if method == "HEAD":
        return MachineReason.HEAD
    if _scanner_agent(user_agent):
        return MachineReason.SCANNER
    return MachineReason.NONE


# --- Recording -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One pixel fetch (link_id 0) or redirect, as the request saw it."""

    delivery_id: int
    link_id: int
    at: float  # seconds since the epoch
    user_agent: str
    ip: str
    method: str = "GET"

    def dumps(self) -> str:
        return json.dumps(
            [self.delivery_id, self.link_id, self.at, self.user_agent[:300], self.ip, self.method]
        )

    @classmethod
    def loads(cls, data: str | bytes) -> Hit:
        delivery_id, link_id, at, user_agent, ip, method = json.loads(data)
        return cls(int(delivery_id), int(link_id), float(at), str(user_agent), str(ip), str(method))


def _buffer_key() -> str:
    return cache.make_key("tracking:hits")


def _redis() -> Any | None:
    """The cache's Redis client, or None on the embedded default."""
    backend: Any = caches["default"]
    if isinstance(backend, RedisCache):
        return backend._cache.get_client(write=True)
    return None


class _Outbox:
    """Hits of this process on their way to Redis: pushed by a thread of its own every
    TRACKING_PUSH_INTERVAL seconds in one RPUSH, so a request only appends to a list.

    The price: a process that dies loses the hits of its last interval (50 ms by
    default); a process that exits normally pushes them first (atexit).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: list[str] = []
        self._pid = 0
        self._wake = threading.Event()
        self._pushing = threading.Lock()

    def add(self, item: str) -> None:
        with self._lock:
            self._hits.append(item)
            if self._pid != os.getpid():  # first use in this (perhaps forked) process
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="tracking-outbox", daemon=True).start()
                atexit.register(self.push)

    def push(self) -> int:
        """Send what is waiting now; how many. A failed push keeps them for the next.
        One push at a time: a flush in this process sees the thread's push complete."""
        with self._pushing:
            with self._lock:
                items, self._hits = self._hits, []
            if not items:
                return 0
            client = _redis()
            try:
                if client is None:  # the settings changed (tests): keep them
                    raise ConnectionError("the cache is not Redis")
                client.rpush(_buffer_key(), *items)
            except (RedisError, OSError) as exc:
                if client is not None:
                    logger.warning(
                        "%d opens and clicks kept: Redis refused them (%s).", len(items), exc
                    )
                with self._lock:
                    self._hits[:0] = items[-_OUTBOX_LIMIT:]
                return 0
            return len(items)

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.TRACKING_PUSH_INTERVAL)
            self.push()


# What one process keeps when Redis cannot be reached: the most recent hits.
_OUTBOX_LIMIT = 100_000
_outbox = _Outbox()


def record(hit: Hit) -> None:
    """Keep one hit: on its way to the Redis buffer, else written at once."""
    if _redis() is not None:
        _outbox.add(hit.dumps())
        return
    record_events([hit])


def flush_buffered_events(*, batch: int = 2000) -> int:
    """Write the hits waiting in the Redis buffer (the beat task); how many.

    A batch is moved (one Lua script, atomically) to a numbered processing list and
    deleted from it only once written: a flush that fails (database down, worker killed)
    leaves it for the next flush, which writes it first. The batch's number is saved in
    the same transaction as its events, so a batch written whose list was not deleted
    (the worker died in between) is not written again."""
    client = _redis()
    if client is None:
        return 0
    _outbox.push()  # this process's own, if it recorded any
    total = 0
    while True:
        number, raw = _take_batch(client, batch)
        if not raw:
            return total
        _write_batch(client, number, [Hit.loads(item) for item in raw])
        _finish_batch(client, number)
        total += len(raw)
        if len(raw) < batch:
            return total


# KEYS: buffer, processing list, its number's key; ARGV: batch size, a new number. The
# processing batch left by a failed flush if there is one, else the oldest hits moved
# there under the new number (random: a Redis emptied by a restart cannot repeat one).
_TAKE = """
local number = redis.call('GET', KEYS[3])
if number then return {number, redis.call('LRANGE', KEYS[2], 0, -1)} end
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return {'0', items} end
redis.call('LTRIM', KEYS[1], #items, -1)
number = ARGV[2]
redis.call('DEL', KEYS[2])
for i = 1, #items, 500 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 499, #items)))
end
redis.call('SET', KEYS[3], number)
return {number, items}
"""
# KEYS: processing list, its number's key; ARGV: the batch written. Another flush may
# have finished it and taken the next one meanwhile: only this batch is deleted.
_FINISH = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1
"""


def _batch_keys() -> list[str]:
    return [
        _buffer_key(),
        cache.make_key("tracking:processing"),
        cache.make_key("tracking:processing-number"),
    ]


def _take_batch(client: Any, size: int) -> tuple[int, list[bytes]]:
    number, items = client.eval(_TAKE, 3, *_batch_keys(), size, secrets.randbits(62) + 1)
    return int(number), list(items)


def _finish_batch(client: Any, number: int) -> None:
    keys = _batch_keys()
    client.eval(_FINISH, 2, keys[1], keys[2], str(number))


def _write_batch(client: Any, number: int, hits: Sequence[Hit]) -> int:
    """One buffered batch's events and its number, in one transaction; 0 if written
    already (by a flush that died before deleting it, or by another flush meanwhile)."""
    with transaction.atomic():
        lock_engagement_writers()
        if client.get(_batch_keys()[2]) != str(number).encode():
            return 0  # another flush wrote and deleted it while this one waited
        done, _ = EngagementRollupMark.objects.get_or_create(table=_FLUSHED)
        if done.last_id == number:
            return 0
        written = _record_events(hits)
        EngagementRollupMark.objects.filter(table=_FLUSHED).update(last_id=number)
    return written


def record_events(hits: Sequence[Hit]) -> int:
    """Classify and write hits, a whole batch in a few statements: the deliveries read
    once, the events inserted at once, each reader's first human open and click set by
    one UPDATE. A hit of an unknown delivery, or of a link of another article, is
    dropped. Returns how many were written."""
    if not hits:
        return 0
    with transaction.atomic():
        # One writer at a time: a flush reads each delivery's first open and click and
        # the stored clicks, and must not race another flush (nor the roll-up) doing so.
        lock_engagement_writers()
        return _record_events(hits)


def lock_engagement_writers() -> None:
    """Inside a transaction: wait until no other flush or roll-up holds the lock.
    A row lock (SELECT FOR UPDATE) on PostgreSQL; SQLite serialises writers itself."""
    EngagementRollupMark.objects.get_or_create(table=_WRITERS)
    list(EngagementRollupMark.objects.select_for_update().filter(table=_WRITERS))


# The EngagementRollupMark row whose lock says who writes events, and the one holding
# the number of the last buffered batch written (flush_buffered_events).
_WRITERS = "writers"
_FLUSHED = "flushed-batch"


def _record_events(hits: Sequence[Hit]) -> int:
    if not Publication.load().track_engagement:
        return 0  # opens and clicks are not counted now, even from emails sent before
    # Not the hits of a reader who opted out, nor of a send whose emails were untracked,
    # nor of an email older than the retention period (its first open and click are
    # cleared then: a late hit would count the reader a second time).
    deliveries = {
        row[0]: row[1:]
        for row in Delivery.objects.filter(
            pk__in={h.delivery_id for h in hits},
            send__tracked=True,
            subscriber__tracking_opt_out=False,
            sent_at__gte=timezone.now() - timedelta(days=settings.TRACKING_RETENTION_DAYS),
        ).values_list("pk", "send__article_id", "sent_at", "opened_at", "clicked_at")
    }
    link_articles = dict(
        TrackedLink.objects.filter(pk__in={h.link_id for h in hits if h.link_id}).values_list(
            "pk", "article_id"
        )
    )
    opens: list[OpenEvent] = []
    clicks: list[tuple[Hit, datetime, int]] = []
    for hit in sorted(hits, key=lambda h: h.at):
        known = deliveries.get(hit.delivery_id)
        if known is None:
            continue
        article_id, sent_at = known[0], known[1]
        at = datetime.fromtimestamp(hit.at, tz=UTC)
        if hit.link_id == 0:
            reason = classify_open(
                user_agent=hit.user_agent, ip=hit.ip, at=at, sent_at=sent_at, method=hit.method
            )
            opens.append(
                OpenEvent(
                    delivery_id=hit.delivery_id,
                    article_id=article_id,
                    at=at,
                    engagement=Engagement.MACHINE if reason else Engagement.HUMAN,
                    reason=reason,
                )
            )
        elif link_articles.get(hit.link_id) == article_id:
            clicks.append((hit, at, article_id))
    _set_first(
        "opened_at",
        {pk: known[2] for pk, known in deliveries.items()},
        [e for e in opens if e.engagement == Engagement.HUMAN],
    )
    OpenEvent.objects.bulk_create(opens)
    written = _record_clicks(clicks, {pk: known[3] for pk, known in deliveries.items()})
    return len(opens) + written


def _set_first(
    field: str, current: dict[int, datetime | None], human: Sequence[OpenEvent | ClickEvent]
) -> None:
    """`field` (opened_at, clicked_at) to each delivery's earliest human event, in one
    UPDATE, where it is empty or later; that event is marked `first` (not yet saved)."""
    earliest: dict[int, OpenEvent | ClickEvent] = {}
    for event in human:
        known = earliest.get(event.delivery_id)
        if known is None or event.at < known.at:
            earliest[event.delivery_id] = event
    changed = {}
    for pk, event in earliest.items():
        now_set = current.get(pk)
        if now_set is None or now_set > event.at:
            changed[pk] = event.at
            event.first = True
    if changed:
        Delivery.objects.filter(pk__in=changed).update(
            **{field: Case(*(When(pk=pk, then=Value(at)) for pk, at in changed.items()))}
        )
        # An earlier event arrived after a later one: the later one is first no more.
        model = OpenEvent if field == "opened_at" else ClickEvent
        model.objects.filter(delivery_id__in=changed, first=True).update(first=False)


def _record_clicks(
    clicks: list[tuple[Hit, datetime, int]], clicked_at: dict[int, datetime | None]
) -> int:
    """The batch's clicks, classified against each other and the delivery's clicks
    already stored: a burst (BURST_LINKS links within BURST_SECONDS) is a machine's, and
    so are the burst's clicks already counted as a reader's."""
    if not clicks:
        return 0
    window = timedelta(seconds=BURST_SECONDS)
    delivery_ids = {hit.delivery_id for hit, _, _ in clicks}
    stored = ClickEvent.objects.filter(
        delivery_id__in=delivery_ids,
        at__gte=min(at for _, at, _ in clicks) - window,
        at__lte=max(at for _, at, _ in clicks) + window,
    ).values_list("pk", "delivery_id", "link_id", "at")
    # Per delivery: (stored pk or None, link, at, new event or None).
    seen: dict[int, list[tuple[int | None, int, datetime, ClickEvent | None]]] = {}
    for pk, delivery_id, link_id, at in stored:
        seen.setdefault(delivery_id, []).append((pk, link_id, at, None))
    new: list[ClickEvent] = []
    reclassified: set[int] = set()
    burst_deliveries: set[int] = set()
    for hit, at, article_id in clicks:
        reason = classify_click(user_agent=hit.user_agent, method=hit.method)
        event = ClickEvent(
            delivery_id=hit.delivery_id, article_id=article_id, link_id=hit.link_id, at=at
        )
        nearby = [c for c in seen.get(hit.delivery_id, []) if abs(c[2] - at) <= window]
        if not reason and len({c[1] for c in nearby} | {hit.link_id}) >= BURST_LINKS:
            reason = MachineReason.BURST
            burst_deliveries.add(hit.delivery_id)
            for stored_pk, _, _, earlier in nearby:
                if stored_pk is not None:
                    reclassified.add(stored_pk)
                elif earlier is not None and earlier.engagement == Engagement.HUMAN:
                    earlier.engagement, earlier.reason = Engagement.MACHINE, MachineReason.BURST
        event.engagement = Engagement.MACHINE if reason else Engagement.HUMAN
        event.reason = reason
        seen.setdefault(hit.delivery_id, []).append((None, hit.link_id, at, event))
        new.append(event)
    if reclassified:
        ClickEvent.objects.filter(pk__in=reclassified, engagement=Engagement.HUMAN).update(
            engagement=Engagement.MACHINE, reason=MachineReason.BURST
        )
    human = [e for e in new if e.engagement == Engagement.HUMAN]
    # Each (delivery, link)'s first human click stored: its pk and time.
    first_clicks: dict[tuple[int, int], tuple[int | None, datetime]] = {}
    for pk, delivery_id, link_id, at in (
        ClickEvent.objects.filter(
            delivery_id__in={e.delivery_id for e in human},
            link_id__in={e.link_id for e in human},
            engagement=Engagement.HUMAN,
        )
        .order_by("at", "id")
        .values_list("pk", "delivery_id", "link_id", "at")
    ):
        first_clicks.setdefault((delivery_id, link_id), (pk, at))
    superseded: set[int] = set()
    for event in sorted(human, key=lambda e: e.at):
        key = (event.delivery_id, event.link_id)
        known = first_clicks.get(key)
        if known is None or event.at < known[1]:
            if known is not None and known[0] is not None:
                superseded.add(known[0])  # stored later, arrived earlier: first no more
            event.first_of_link = True
            first_clicks[key] = (None, event.at)
    if superseded:
        ClickEvent.objects.filter(pk__in=superseded).update(first_of_link=False)
    _set_first(
        "clicked_at",
        {pk: at for pk, at in clicked_at.items() if pk not in burst_deliveries},
        [e for e in human if e.delivery_id not in burst_deliveries],
    )
    ClickEvent.objects.bulk_create(new)
    for delivery_id in burst_deliveries:
        _recount_firsts(delivery_id)
    return len(new)


def _recount_firsts(delivery_id: int) -> None:
    """After a burst turned some of a delivery's clicks into a machine's: its first human
    click, and first human click per link, again."""
    clicks = ClickEvent.objects.filter(delivery_id=delivery_id)
    clicks.update(first=False, first_of_link=False)
    human = list(clicks.filter(engagement=Engagement.HUMAN).order_by("at", "id"))
    firsts_of_link: dict[int, int] = {}
    for event in human:
        firsts_of_link.setdefault(event.link_id, event.pk)
    ClickEvent.objects.filter(pk__in=firsts_of_link.values()).update(first_of_link=True)
    if human:
        ClickEvent.objects.filter(pk=human[0].pk).update(first=True)
    Delivery.objects.filter(pk=delivery_id).update(clicked_at=human[0].at if human else None)


def hit_from_request(
    *, delivery_id: int, link_id: int, meta: dict[str, Any], method: str, client_ip: str
) -> Hit:
    return Hit(
        delivery_id=delivery_id,
        link_id=link_id,
        at=time.time(),
        user_agent=str(meta.get("HTTP_USER_AGENT", "")),
        ip=client_ip,
        method=method,
    )


# --- The reader's own data --------------------------------------------------------------


def export_engagement_of(*, subscriber: Any) -> dict[str, list[dict[str, Any]]]:
    """The reader's opens and clicks, for their data export."""
    opens = OpenEvent.objects.filter(delivery__subscriber=subscriber).order_by("at")
    clicks = ClickEvent.objects.filter(delivery__subscriber=subscriber).order_by("at")
    return {
        "opens": [
            {
                "article_title": title,
                "at": at,
                "counted_as": engagement,
                "machine_reason": reason,
            }
            for title, at, engagement, reason in opens.values_list(
                "article__title", "at", "engagement", "reason"
            )
        ],
        "clicks": [
            {
                "article_title": title,
                "url": url,
                "at": at,
                "counted_as": engagement,
                "machine_reason": reason,
            }
            for title, url, at, engagement, reason in clicks.values_list(
                "article__title", "link__url", "at", "engagement", "reason"
            )
        ],
    }


def erase_engagement_of(*, subscriber: Any) -> int:
    """Delete the reader's opens and clicks (the daily counts, which name nobody, stay).
    Returns how many events went."""
    opens, _ = OpenEvent.objects.filter(delivery__subscriber=subscriber).delete()
    clicks, _ = ClickEvent.objects.filter(delivery__subscriber=subscriber).delete()
    Delivery.objects.filter(subscriber=subscriber).update(opened_at=None, clicked_at=None)
    return opens + clicks
