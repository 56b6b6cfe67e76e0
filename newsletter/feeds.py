"""The RSS feed: every reader of it is anonymous, so paid articles stop at the paywall."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.syndication.views import Feed
from django.http import HttpRequest
from django.utils.feedgenerator import Rss201rev2Feed
from django.utils.html import escape

from newsletter import selectors
from newsletter.models import Article
from newsletter.services.body_images import render_body
from newsletter.services.content import free_body
from publication.models import Publication

FEED_LENGTH = 20

# What XML 1.0 cannot hold, even as a character reference: the C0 controls but tab,
# newline and carriage return, lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: Any) -> Any:
    """`value` without the characters XML 1.0 cannot hold (in a string, or in each string
    of a list or tuple); anything else as it is."""
    if isinstance(value, str):
        return _NOT_XML.sub("", value)
    if isinstance(value, list | tuple):
        return type(value)(xml_text(part) for part in value)
    return value


class XmlSafeRssFeed(Rss201rev2Feed):
    """RSS 2.0 with every text the feed or an item carries made fit for XML 1.0: a control
    character pasted into a title (Django refuses it: a 500) or U+FFFF in a body (written
    as it is: a feed no reader can parse) is left out, the rest kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            *(xml_text(arg) for arg in args), **{k: xml_text(v) for k, v in kwargs.items()}
        )

    def add_item(self, *args: Any, **kwargs: Any) -> None:
        super().add_item(
            *(xml_text(arg) for arg in args), **{k: xml_text(v) for k, v in kwargs.items()}
        )


class LatestArticlesFeed(Feed):
    feed_type = XmlSafeRssFeed

    def get_object(self, request: HttpRequest, *args, **kwargs) -> Publication:
        return Publication.load()

    def title(self, obj: Publication) -> str:
        return obj.name

    def description(self, obj: Publication) -> str:
        return obj.tagline or obj.description

    def link(self) -> str:
        return f"{settings.SITE_URL}/"

    def feed_url(self) -> str:
        return f"{settings.SITE_URL}/feed/"

    def items(self) -> list[Article]:
        return list(selectors.published_articles()[:FEED_LENGTH])

    def item_title(self, item: Article) -> str:
        return item.title

    def item_link(self, item: Article) -> str:
        return f"{settings.SITE_URL}{item.get_absolute_url()}"

    def item_description(self, item: Article) -> str:
        html = render_body(html=free_body(article=item), for_email=True)
        if item.visibility != Article.Visibility.PUBLIC:
            paid = item.visibility == Article.Visibility.PAID
            audience = "paid subscribers" if paid else "subscribers"
            html += (
                f'<p><a href="{escape(self.item_link(item))}">The rest of this article '
                f"is for {audience}. Read it on the site.</a></p>"
            )
        if item.subtitle:
            html = f"<p><em>{escape(item.subtitle)}</em></p>{html}"
        return html

    def item_pubdate(self, item: Article) -> datetime | None:
        return item.published_at

    def item_updateddate(self, item: Article) -> datetime:
        return item.updated_at

    def item_author_name(self, item: Article) -> str:
        return ", ".join(author.display_name for author in item.authors.all())

    def item_categories(self, item: Article) -> list[str]:
        return [item.section.name] if item.section else []
