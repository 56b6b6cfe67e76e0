from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from newsletter.services.page_cache import shared_fragment
from publication.models import Publication
from subscriptions import stripe_client
from subscriptions.services.access import user_is_paid
from subscriptions.services.plans import upgrades_open


def publication(request: HttpRequest) -> dict:
    return {
        # The same for every reader; a save renews the page cache's generation.
        "publication": shared_fragment("publication", Publication.load),
        # Looked up only by templates that ask, and never for anonymous readers.
        "reader_is_paid": SimpleLazyObject(lambda: user_is_paid(user=request.user)),
        # Whether a plan can be bought now, and whether /donate/ takes payments: without
        # them no page links to an upgrade or a donation form that leads nowhere.
        "upgrades_open": SimpleLazyObject(upgrades_open),
        "donations_open": stripe_client.is_configured(),
    }
