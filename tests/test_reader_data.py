"""A reader's data, across every app: each model that can hold some belongs to a part of
the hook (subscriptions/reader_data.py), and erasing the account leaves nothing the
reader wrote or received, by Django's own list of models and fields."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.apps import apps
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.core import mail
from django.core.cache import caches
from django.db import models, transaction
from django.utils import timezone

from newsletter.models import Comment, CommentBan, Delivery, EmailSend
from subscriptions.models import (
    Donation,
    Gift,
    GroupInvite,
    Membership,
    StripeEvent,
    Subscriber,
    Suppression,
)
from subscriptions.reader_data import models_with_reader_data, reader_data_parts
from subscriptions.services import gifts
from subscriptions.services.accounts import delete_reader_account, export_reader_data
from subscriptions.services.addresses import email_hash
from tests.factories import (
    MembershipFactory,
    PlanFactory,
    PublishedArticleFactory,
    StaffUserFactory,
    SubscriberFactory,
    UserFactory,
)

EMAIL = "rita@example.com"
LOOK_ALIKE = "margarita@example.com"
# Everything below is the reader's alone: their address, name and customer id, and the
# words they wrote or were sent. None of it may survive the erasure, in any table.
TRACES = [
    EMAIL,
    "Rita Reader",
    "reader-rita",
    "cus_rita",
    "unmistakably Rita's remark",
    "Rita's donation note",
    "Rita's note to Fran",
    "Fran's birthday wish for Rita",
]


# Models with an address field that never holds a reader's: the publication's sender.
NOT_READERS = {"publication.Publication"}


def _holds_reader_data(field: models.Field) -> bool:
    subscriber_or_user = (get_user_model(), Subscriber)
    if field.is_relation and field.concrete and field.related_model in subscriber_or_user:
        return True
    return isinstance(field, models.EmailField)


def _every_model():
    return apps.get_models(include_auto_created=True)


def test_every_model_that_can_hold_a_readers_data_belongs_to_a_registered_part():
    holding = {
        model._meta.label
        for model in _every_model()
        if any(_holds_reader_data(f) for f in model._meta.get_fields())
    } - NOT_READERS
    registered = models_with_reader_data()
    assert holding - registered == set(), (
        "register these models' rows with subscriptions.reader_data.register_reader_data"
    )
    known = {model._meta.label for model in _every_model()}
    assert registered - known == set(), "a part names a model that does not exist"
    names = [part.name for part in reader_data_parts()]
    assert {"comments", "comment_ban", "deliveries", "donations", "subscriber"} <= set(names)


def _traces_by_model(*, user_pk: int, subscriber_pk: int) -> dict[str, list[str]]:
    """Where the reader still is: rows pointing at their account or subscriber, and text
    or JSON columns holding one of their traces."""
    User = get_user_model()
    found: dict[str, list[str]] = {}
    for model in _every_model():
        manager = model._base_manager
        for field in model._meta.concrete_fields:
            hits = []
            if field.is_relation and field.related_model is User:
                hits = [f"{field.name}=user"] if manager.filter(**{field.name: user_pk}) else []
            elif field.is_relation and field.related_model is Subscriber:
                pointing = manager.filter(**{field.name: subscriber_pk})
                hits = [f"{field.name}=subscriber"] if pointing else []
            elif isinstance(field, models.CharField | models.TextField | models.JSONField):
                hits = [
                    f"{field.name}~{trace}"
                    for trace in TRACES
                    if manager.filter(**{f"{field.name}__icontains": trace})
                    .exclude(**{field.name: LOOK_ALIKE})  # someone else's, holding EMAIL
                    .exists()
                ]
            if hits:
                found.setdefault(model._meta.label, []).extend(hits)
    return found


@pytest.fixture
def reader_everywhere():
    """A reader with a row in every table that can hold something of theirs."""
    user = UserFactory(username="reader-rita", email=EMAIL, first_name="Rita Reader")
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Authenticator.objects.create(user=user, type=Authenticator.Type.TOTP, data={"secret": "x"})
    subscriber = SubscriberFactory(
        email=EMAIL, user=user, name="Rita Reader", stripe_customer_id="cus_rita"
    )
    plan = PlanFactory()
    membership = MembershipFactory(
        subscriber=subscriber, plan=plan, status=Membership.Status.CANCELED
    )
    received = MembershipFactory(
        subscriber=subscriber, plan=None, kind=Membership.Kind.GIFT, stripe_subscription_id=None
    )
    today = timezone.localdate()
    gift = Gift.objects.create(
        plan=plan,
        months=3,
        amount=2400,
        buyer_email="fran@example.com",
        buyer_name="Fran",
        recipient_email=EMAIL,
        recipient_name="Rita Reader",
        message="Fran's birthday wish for Rita",
        deliver_on=today,
        status=Gift.Status.REDEEMED,
        membership=received,
    )
    Gift.objects.create(
        plan=plan,
        months=1,
        amount=800,
        buyer_email=EMAIL,
        buyer_name="Rita Reader",
        recipient_email="fran@example.com",
        message="Rita's note to Fran",
        deliver_on=today + timedelta(days=3),
        status=Gift.Status.PAID,
    )
    owner = SubscriberFactory(email="owner@example.com")
    group = MembershipFactory(subscriber=owner, plan=PlanFactory(kind="group"), quantity=5)
    invite = GroupInvite.objects.create(group=group, email=EMAIL)
    donation = Donation.objects.create(
        amount=500,
        email=EMAIL,
        subscriber=subscriber,
        message="Rita's donation note",
        status="paid",
    )
    StripeEvent.objects.create(
        stripe_id="evt_rita",
        type="checkout.session.completed",
        created=timezone.now(),
        payload={"data": {"object": {"customer": "cus_rita", "customer_email": EMAIL}}},
        processed_at=timezone.now(),
    )
    StripeEvent.objects.create(
        stripe_id="evt_rita_customer",
        type="customer.updated",
        created=timezone.now(),
        payload={"data": {"object": {"id": "cus_rita", "object": "customer", "email": EMAIL}}},
        object_id="cus_rita",
        processed_at=timezone.now(),
    )
    article = PublishedArticleFactory()
    send = EmailSend.objects.create(article=article, audience="everyone")
    delivery = Delivery.objects.create(
        send=send, subscriber=subscriber, status="failed", last_error=f"450 <{EMAIL}> busy"
    )
    answered = Comment.objects.create(
        article=article, user=user, body="An unmistakably Rita's remark, on the strait."
    )
    other = UserFactory(email="other@example.com")
    Comment.objects.create(article=article, user=other, parent=answered, body="Agreed.")
    Comment.objects.create(article=article, user=user, body="And unmistakably Rita's remark 2.")
    editor = StaffUserFactory()
    CommentBan.objects.create(user=user, banned_by=editor, reason="for a week")
    # The admin's history, as the admin writes it (ModelAdmin.log_change): entries about
    # the reader's rows, named by their repr ("5.00 USD from rita@example.com", "Comment
    # by reader-rita on ...") or not (a delivery); one about a row of someone else's whose
    # message names the reader; one about a look-alike address, which is not theirs.
    look_alike = SubscriberFactory(email=LOOK_ALIKE)
    for obj in (subscriber, membership, donation, answered, gift, invite, delivery, look_alike):
        LogEntry.objects.log_actions(
            user_id=editor.pk, queryset=[obj], action_flag=CHANGE, change_message="status"
        )
    LogEntry.objects.log_actions(
        user_id=editor.pk,
        queryset=[group],
        action_flag=CHANGE,
        change_message=f"Invited {EMAIL.upper()}, then Rita Reader.",
    )
    return user, subscriber


def _signed_in_session(user) -> str:
    """A session of the user's on some device, stored as the session engine stores it."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session.save()
    return session.session_key


@pytest.mark.django_db
def test_erasing_a_reader_leaves_nothing_they_wrote_or_received_in_any_table(reader_everywhere):
    user, subscriber = reader_everywhere
    # Signed in on two devices; someone else on a third.
    theirs = [_signed_in_session(user), _signed_in_session(user)]
    someone_elses = _signed_in_session(UserFactory())
    engine = import_module(settings.SESSION_ENGINE)
    session_cache = caches[settings.SESSION_CACHE_ALIAS]
    assert all(session_cache.get(engine.SessionStore(session_key=k).cache_key) for k in theirs)
    ids = {"user_pk": user.pk, "subscriber_pk": subscriber.pk}
    before = _traces_by_model(**ids)
    # The search sees the reader in every app's tables before the erasure.
    assert {
        "account.EmailAddress",
        "admin.LogEntry",
        "mfa.Authenticator",
        "newsletter.Comment",
        "newsletter.CommentBan",
        "newsletter.Delivery",
        "subscriptions.Donation",
        "subscriptions.Gift",
        "subscriptions.GroupInvite",
        "subscriptions.Membership",
        "subscriptions.StripeEvent",
        "subscriptions.Subscriber",
    } <= set(before), before

    delete_reader_account(user=user)

    assert _traces_by_model(**ids) == {}
    # The admin's history of the reader's rows goes too, named or not; a look-alike
    # address's stays.
    assert list(LogEntry.objects.values_list("object_repr", flat=True)) == [LOOK_ALIKE]
    # Signed out everywhere: no session row, and no cache copy of one (cached_db).
    assert list(Session.objects.values_list("session_key", flat=True)) == [someone_elses]
    for key in theirs:
        assert session_cache.get(engine.SessionStore(session_key=key).cache_key) is None
        assert engine.SessionStore(session_key=key).load() == {}
    assert engine.SessionStore(session_key=someone_elses).load()[SESSION_KEY]
    assert Suppression.objects.filter(email_hash=email_hash(EMAIL)).exists()
    # What others wrote or own stays: the reply, under an anonymous placeholder; the
    # buyer's side of the gift the reader received; the group and its owner.
    assert Comment.objects.filter(body="Agreed.", parent__user__isnull=True).exists()
    assert Gift.objects.filter(buyer_email="fran@example.com", status="redeemed").exists()
    assert Gift.objects.filter(recipient_email="fran@example.com", amount=800).exists()
    assert Membership.objects.filter(subscriber__email="owner@example.com").exists()
    assert Donation.objects.get().amount == 500


@pytest.mark.django_db
def test_the_export_has_one_entry_per_part_with_the_readers_rows(reader_everywhere):
    user, _ = reader_everywhere

    data = export_reader_data(user=user)

    exported = {part.name for part in reader_data_parts() if part.export is not None}
    assert set(data) == {"exported_at", *exported}
    assert data["account"]["email"] == EMAIL
    assert [g["message"] for g in data["gifts"]["given"]] == ["Rita's note to Fran"]
    assert [g["message"] for g in data["gifts"]["received"]] == ["Fran's birthday wish for Rita"]
    assert [i["email"] for i in data["group_invites"]] == [EMAIL]
    assert [d["last_error"] for d in data["deliveries"]] == [f"450 <{EMAIL}> busy"]
    assert len(data["comments"]) == 2
    assert data["comment_ban"]["reason"] == "for a week"
    assert "secret" not in str(data)  # two-factor keys are erased, never exported


@pytest.mark.django_db
def test_gifts_of_an_erased_reader_are_never_mailed_to_the_blank_address(
    django_capture_on_commit_callbacks,
):
    user = UserFactory(email=EMAIL)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    SubscriberFactory(email=EMAIL, user=user)
    plan = PlanFactory()
    today = timezone.localdate()
    bought = Gift.objects.create(
        plan=plan,
        months=1,
        amount=800,
        buyer_email=EMAIL,
        recipient_email="fran@example.com",
        deliver_on=today,
        stripe_checkout_session_id="cs_rita",
    )
    Gift.objects.create(
        plan=plan,
        months=1,
        amount=800,
        buyer_email="fran@example.com",
        recipient_email=EMAIL,
        deliver_on=today,
        status=Gift.Status.PAID,
    )
    delete_reader_account(user=user)
    mail.outbox.clear()

    # The erased recipient's gift is not due to anyone; the erased buyer's gift, paid
    # after all, still reaches its recipient, with no receipt to a blank address.
    assert gifts.deliver_due_gifts() == 0
    session = {"id": "cs_rita", "status": "complete", "payment_status": "paid"}
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        gifts.record_paid_gift(session=session)

    assert [m.to for m in mail.outbox] == [["fran@example.com"]]
    bought.refresh_from_db()
    assert bought.status == Gift.Status.DELIVERED
