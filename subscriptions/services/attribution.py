"""Which article a signup, an upgrade or a donation came from, without knowing articles.

Readers and money sit below content in the layers (`subscriptions/` never imports
`newsletter/`), so a conversion stores an opaque source: `source_article_id`, a plain
number on the Subscriber, Membership and Donation. What a `ref` typed into a link or
posted by a form names is decided by the content layer, which registers a resolver at
start (`newsletter.apps`): a ref that names nothing it knows is ignored, never an error.

Attribution is last touch: each conversion is credited to the article named by the
request that made it (the form, the checkout, the link in the email), and a signup
that names no article leaves an earlier credit alone.
"""

from __future__ import annotations

from collections.abc import Callable

# Refs longer than this name nothing (a slug is at most 200 characters).
MAX_REF_LENGTH = 200
# The key under which the source travels in Stripe Checkout metadata.
SOURCE_KEY = "source_article_id"

SourceResolver = Callable[[str], int | None]
_resolvers: list[SourceResolver] = []


def register_source_resolver(resolver: SourceResolver) -> None:
    """Let `resolver(ref)` say which article id a ref names (None: none it knows)."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def source_for_ref(ref: object) -> int | None:
    """The article id a ref names, or None for anything else (empty, too long, unknown)."""
    if not isinstance(ref, str):
        return None
    ref = ref.strip()
    if not ref or len(ref) > MAX_REF_LENGTH:
        return None
    for resolver in _resolvers:
        found = resolver(ref)
        if found is not None:
            return found
    return None


def source_from_metadata(metadata: object) -> int | None:
    """The source we put in Stripe metadata at checkout (already resolved then)."""
    if not isinstance(metadata, dict):
        return None
    value = str(metadata.get(SOURCE_KEY) or "")
    return int(value) if value.isdigit() and 0 < int(value) < 2**31 else None


def source_metadata(source_article_id: int | None) -> dict[str, str]:
    return {SOURCE_KEY: str(source_article_id)} if source_article_id else {}
