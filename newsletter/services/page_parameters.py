"""The query parameters of the reader pages, parsed once for the views and the page cache.

A page's copy in the page cache is keyed by these parsed values, never by the raw query
text, so spellings of one page share one copy (`newsletter.services.page_cache`).
"""

from __future__ import annotations

import enum


class Order(enum.Enum):
    OLDEST = "oldest"
    NEWEST = "newest"

    @classmethod
    def parse(cls, value: str | None) -> Order:
        try:
            return cls(value or cls.OLDEST.value)
        except ValueError:
            return cls.OLDEST


def parse_page_number(value: str | None) -> int | None:
    """A page number from a query string: 1 when absent, None when it is no number.

    Any size is returned as it is; whether that page exists is the caller's question
    (`thread_page_count`), so a huge number is a 404 rather than a database error.
    """
    if value is None or value == "":
        return 1
    try:
        return int(value.strip())
    except ValueError:  # also for more digits than int() takes from text
        return None


def discussion_page_number(value: str | None) -> int:
    """The discussion page an article shows for `?cpage=`: junk, zero and below are page 1.

    The article view (404 past the last page), the thread template tag and the page
    cache's key all read it through here, so they agree on which page a value means.
    """
    return max(parse_page_number(value) or 1, 1)
