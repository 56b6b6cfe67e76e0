from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from newsletter.models import Publication
from newsletter.services.page_cache import shared_fragment
from subscriptions.services.access import user_is_paid


def publication(request: HttpRequest) -> dict:
    return {
        # The same for every reader; a save renews the page cache's generation.
        "publication": shared_fragment("publication", Publication.load),
        # Looked up only by templates that ask, and never for anonymous readers.
        "reader_is_paid": SimpleLazyObject(lambda: user_is_paid(user=request.user)),
    }
