"""Articles as the source of conversions: what a `ref` names, and what each article brought.

Readers and money store only an article's id (`source_article_id`) on the subscriber,
membership and donation a conversion made (`subscriptions.services.attribution`); this
is the content layer's half. `article_for_ref` is registered as the resolver at start
(`newsletter.apps`), so a signup, upgrade or donation naming `?ref=<slug>` is credited
to that published article, and a ref naming no published article is ignored.

The article page's forms and links, and the email's upgrade and donate buttons, carry
the article's slug as `ref`: the same for every reader, so it may sit in the anonymous
page cache. The cache keys pages by the parameters a page reads, and no page reads
`ref`, so `?ref=` on a shared link neither splits nor changes a cached copy.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from newsletter.models import Article
from subscriptions.services.growth import ArticleConversions, conversions_by_source

# What Django's SlugField accepts (articles' slugs are not unicode).
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")


def article_for_ref(ref: str) -> int | None:
    """The id of the published article whose slug `ref` is, or None."""
    if not _SLUG.fullmatch(ref):
        return None  # no slug: nothing to look up (and no NUL byte sent to the database)
    return (
        Article.objects.filter(slug=ref, status=Article.Status.PUBLISHED)
        .values_list("pk", flat=True)
        .first()
    )


def ref_query(article: Article) -> str:
    """`?ref=<slug>` for links that credit conversions to `article` ("" without a slug)."""
    return f"?{urlencode({'ref': article.slug})}" if article.slug else ""


def article_conversions(*, article: Article) -> ArticleConversions:
    """The signups, upgrades and donations credited to this article, and their money."""
    return conversions_by_source(source_article_ids=[article.pk])[article.pk]
