"""Admin search on address columns by the one address rule, never by database case folding.

Django's default search is `icontains`, which PostgreSQL runs as `UPPER(email) LIKE
UPPER(...)` and so folds a dotless i onto I: a search for a look-alike would list the
real reader. Address columns are searched with a case-sensitive `contains` instead
(stored addresses are in their normal form, lower-case ASCII), and a search term that
is a whole address is first put in that same form.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from subscriptions.services.addresses import normalized_or_none


class AddressSearchMixin:
    """For a ModelAdmin whose `search_fields` name address columns as `<field>__contains`."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        term = normalized_or_none(term) or term.lower()
        return super().get_search_results(request, queryset, term)  # type: ignore[misc]
