"""factory_boy factories for the models of both apps."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from newsletter.models import Article, Author, Comment, Section
from subscriptions.models import Membership, Plan, Subscriber
from subscriptions.services.addresses import normalize_email


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"reader{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")


class StaffUserFactory(UserFactory):
    is_staff = True
    is_superuser = True
    username = factory.Sequence(lambda n: f"editor{n}")


class AuthorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Author

    display_name = factory.Sequence(lambda n: f"Author {n}")
    slug = factory.Sequence(lambda n: f"author-{n}")


class SectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Section

    name = factory.Sequence(lambda n: f"Section {n}")
    slug = factory.Sequence(lambda n: f"section-{n}")


class ArticleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Article

    title = factory.Sequence(lambda n: f"Article {n}")
    slug = factory.Sequence(lambda n: f"article-{n}")
    subtitle = "A subtitle"
    body = "<p>The opening paragraph.</p>"


class PublishedArticleFactory(ArticleFactory):
    status = Article.Status.PUBLISHED
    published_at = factory.LazyFunction(timezone.now)


class CommentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comment

    article = factory.SubFactory(PublishedArticleFactory)
    user = factory.SubFactory(UserFactory)
    body = factory.Sequence(lambda n: f"Comment number {n}.")


class SubscriberFactory(factory.django.DjangoModelFactory):
    """Stores the address in its normal form, as every code path that makes one does."""

    class Meta:
        model = Subscriber

    email = factory.Sequence(lambda n: f"subscriber{n}@example.com")
    status = Subscriber.Status.ACTIVE
    confirmed_at = factory.LazyFunction(timezone.now)

    @classmethod
    def _adjust_kwargs(cls, **kwargs):
        kwargs["email"] = normalize_email(kwargs["email"])
        return kwargs


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    name = "Monthly"
    interval = Plan.Interval.MONTH
    amount = 800
    stripe_price_id = factory.Sequence(lambda n: f"price_test_{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    subscriber = factory.SubFactory(SubscriberFactory)
    plan = factory.SubFactory(PlanFactory)
    kind = Membership.Kind.STRIPE
    stripe_subscription_id = factory.Sequence(lambda n: f"sub_test_{n}")
    status = Membership.Status.ACTIVE
