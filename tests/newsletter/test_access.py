"""Which article each reader may read in full, from their visibility and whether
subscriptions calls the reader paid."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from newsletter.models import Article
from newsletter.services.access import can_read_full_article
from subscriptions.models import Membership
from tests.factories import (
    MembershipFactory,
    PublishedArticleFactory,
    StaffUserFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

S = Membership.Status


def reader_with(**membership):
    """A signed-up reader with an account and one membership as given."""
    user = UserFactory()
    subscriber = SubscriberFactory(email=user.email, user=user)
    MembershipFactory(subscriber=subscriber, **membership)
    return user, subscriber


def test_what_each_visibility_lets_each_reader_read():
    public = PublishedArticleFactory(visibility=Article.Visibility.PUBLIC)
    subscribers = PublishedArticleFactory(visibility=Article.Visibility.SUBSCRIBERS)
    paid = PublishedArticleFactory(visibility=Article.Visibility.PAID)
    free_user, _ = reader_with(status=S.CANCELED)
    paid_user, _ = reader_with(status=S.ACTIVE)
    editor = StaffUserFactory()  # no subscriber, no membership
    expected = {
        "anonymous": (AnonymousUser(), (True, False, False)),
        "nobody": (None, (True, False, False)),
        "free": (free_user, (True, True, False)),
        "paid": (paid_user, (True, True, True)),
        "editor": (editor, (True, True, True)),
    }
    for name, (user, reads) in expected.items():
        got = tuple(
            can_read_full_article(user=user, article=a) for a in (public, subscribers, paid)
        )
        assert got == reads, name
