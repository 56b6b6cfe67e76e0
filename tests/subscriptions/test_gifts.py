"""Gift subscriptions: bought on /gift/, delivered on their day, redeemed once."""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta
from email import message_from_bytes
from email import policy as email_policy

import pytest
from django.core import mail
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions.models import Gift, Membership, Plan, Subscriber
from subscriptions.services import access, gifts, memberships, revenue
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def monthly(stripe_api):
    price = stripe_api.add_price(unit_amount=800, interval="month")
    return PlanFactory(name="Monthly", amount=800, stripe_price_id=price["id"])


def buy(client, plan, *, months=3, deliver_on=None, recipient="ada@example.org") -> str:
    response = client.post(
        "/gift/",
        {
            "option": f"{plan.pk}-{months}",
            "recipient_email": recipient,
            "recipient_name": "Ada",
            "buyer_email": "buyer@example.com",
            "buyer_name": "Grace",
            "message": "Happy birthday",
            "deliver_on": (deliver_on or timezone.now().date()).isoformat(),
        },
    )
    assert response.status_code == 303, response.content.decode()[:3000]
    return response["Location"].rsplit("/", 1)[-1]


def redeem_link(message) -> str:
    match = re.search(r"http://testserver(/gift/redeem/[^\s/]+/)", message.body)
    assert match, message.body
    return match.group(1)


def test_the_gift_page_offers_months_of_each_plan(client, monthly, stripe_api):
    yearly_price = stripe_api.add_price(unit_amount=8000, interval="year")
    PlanFactory(name="Yearly", amount=8000, interval="year", stripe_price_id=yearly_price["id"])
    page = client.get("/gift/").content.decode()
    for label in (
        "1 month of Monthly · $8.00",
        "3 months of Monthly · $24.00",
        "6 months of Monthly · $48.00",
        "1 year of Monthly · $96.00",
        "1 year of Yearly · $80.00",
    ):
        assert label in page


def test_a_gift_bought_today_for_next_week_is_emailed_next_week_and_redeemed_once(
    client, stripe_api, stripe_webhooks, monthly, django_capture_on_commit_callbacks
):
    next_week = timezone.now().date() + timedelta(days=7)
    session_id = buy(client, monthly, deliver_on=next_week)
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["mode"] == "payment"
    assert sent["line_items"][0]["price_data"]["unit_amount"] == "2400"
    assert sent["metadata"]["broadside_purpose"] == "gift"
    gift = Gift.objects.get()
    assert gift.status == Gift.Status.PENDING

    session = stripe_api.complete_checkout(session_id, email="buyer@example.com")
    stripe_webhooks.deliver("checkout.session.completed", session)
    stripe_webhooks.deliver("checkout.session.completed", session)  # a second delivery
    gift.refresh_from_db()
    assert gift.status == Gift.Status.PAID
    assert gift.stripe_payment_intent_id == session["payment_intent"]
    (receipt,) = mail.outbox
    assert receipt.to == ["buyer@example.com"]
    assert "ada@example.org" in receipt.body and "$24.00" in receipt.body
    # Not a donation, although it is a one-off payment.
    assert not gift.__class__.objects.filter(status="pending").exists()
    from subscriptions.models import Donation

    assert Donation.objects.count() == 0

    # The periodic task does nothing before the day, then delivers once.
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert gifts.deliver_due_gifts(now=timezone.now() + timedelta(days=6)) == 0
    assert mail.outbox == []
    on_the_day = timezone.now() + timedelta(days=7)
    with django_capture_on_commit_callbacks(execute=True):
        assert gifts.deliver_due_gifts(now=on_the_day) == 1
        assert gifts.deliver_due_gifts(now=on_the_day) == 0
    (delivery,) = mail.outbox
    assert delivery.to == ["ada@example.org"]
    assert "Grace gave you 3 months" in delivery.body
    assert "Happy birthday" in delivery.body
    link = redeem_link(delivery)

    # Following the link changes nothing (mail scanners); the button redeems.
    page = client.get(link)
    assert page.status_code == 200 and "Redeem my gift" in page.content.decode()
    assert not Subscriber.objects.filter(email="ada@example.org").exists()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(link)
    assert response.status_code == 302
    reader = Subscriber.objects.get(email="ada@example.org")
    assert reader.status == Subscriber.Status.ACTIVE and reader.user is not None
    assert access.subscriber_is_paid(subscriber=reader)
    membership = Membership.objects.get(subscriber=reader)
    assert membership.kind == Membership.Kind.GIFT
    assert membership.plan == monthly
    assert membership.starts_at is None
    assert membership.expires_at.month == gifts.add_months(timezone.now(), 3).month
    (notice,) = mail.outbox
    assert notice.to == ["buyer@example.com"]
    assert "redeemed your gift" in notice.subject
    assert client.get("/account/").status_code == 200  # signed in as the recipient

    # A second redemption is refused and changes nothing.
    again = client.post(link)
    assert again.status_code == 409
    assert "already been redeemed" in again.content.decode()
    assert Membership.objects.filter(subscriber=reader).count() == 1

    # Before it ends the recipient is invited to subscribe; then it expires.
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        memberships.expire_memberships(now=membership.expires_at - timedelta(days=3))
    (invitation,) = mail.outbox
    assert invitation.subject == "Your gift subscription ends soon"
    assert "We hope you enjoyed it. To keep reading every article, subscribe:" in invitation.body
    assert "http://testserver/upgrade/" in invitation.body
    memberships.expire_memberships(now=membership.expires_at + timedelta(minutes=1))
    membership.refresh_from_db()
    assert membership.status == Membership.Status.EXPIRED
    assert not access.subscriber_is_paid(subscriber=reader)
    assert revenue.revenue_summary().gifts_redeemed_this_month == 1


def test_a_gift_for_today_is_delivered_when_paid(client, stripe_api, stripe_webhooks, monthly):
    session = stripe_api.complete_checkout(buy(client, monthly))
    stripe_webhooks.deliver("checkout.session.completed", session)
    assert sorted(m.to[0] for m in mail.outbox) == ["ada@example.org", "buyer@example.com"]
    assert Gift.objects.get().status == Gift.Status.DELIVERED
    summary = revenue.revenue_summary()
    assert summary.gifts_sold_this_month == 1
    assert summary.gift_revenue_this_month == {"usd": 2400}


def test_a_gift_to_a_paid_reader_starts_after_their_current_period(
    client, stripe_api, stripe_webhooks, monthly
):
    reader = SubscriberFactory(email="ada@example.org")
    paid_until = timezone.now() + timedelta(days=20)
    MembershipFactory(subscriber=reader, plan=monthly, current_period_end=paid_until)
    other = SubscriberFactory(email="other@example.org")
    session = stripe_api.complete_checkout(buy(client, monthly, months=1))
    stripe_webhooks.deliver("checkout.session.completed", session)
    link = redeem_link(next(m for m in mail.outbox if m.to == ["ada@example.org"]))
    client.post(link)

    gift_membership = Membership.objects.get(subscriber=reader, kind=Membership.Kind.GIFT)
    assert abs((gift_membership.starts_at - paid_until).total_seconds()) < 1
    assert gift_membership.expires_at == gifts.add_months(gift_membership.starts_at, 1)
    # It grants nothing of its own yet (the subscription does), then takes over.
    granting = access.access_granting_memberships()
    assert not granting.filter(pk=gift_membership.pk).exists()
    later = access.access_granting_memberships(now=paid_until + timedelta(days=1))
    assert later.filter(pk=gift_membership.pk).exists()
    assert not access.subscriber_is_paid(subscriber=other)


def test_a_refunded_gift_is_revoked_if_unredeemed(client, stripe_api, stripe_webhooks, monthly):
    next_week = timezone.now().date() + timedelta(days=7)
    session = stripe_api.complete_checkout(buy(client, monthly, deliver_on=next_week))
    stripe_webhooks.deliver("checkout.session.completed", session)
    kept_session = stripe_api.complete_checkout(buy(client, monthly, recipient="kept@example.org"))
    stripe_webhooks.deliver("checkout.session.completed", kept_session)

    charge = stripe_api.refund_charge(payment_intent=session["payment_intent"])
    stripe_webhooks.deliver("charge.refunded", charge)
    refunded = Gift.objects.get(recipient_email="ada@example.org")
    kept = Gift.objects.get(recipient_email="kept@example.org")
    assert refunded.status == Gift.Status.REFUNDED
    assert kept.status == Gift.Status.DELIVERED
    assert gifts.deliver_due_gifts(now=timezone.now() + timedelta(days=8)) == 0
    token = gifts.redemption_token(gift=refunded)
    with pytest.raises(gifts.GiftError, match="refunded"):
        gifts.redeem_gift(token=token)


def test_a_tampered_or_foreign_gift_link_is_refused(client, monthly):
    assert client.get("/gift/redeem/not-a-token/").status_code == 404
    gift = Gift.objects.create(
        plan=monthly,
        months=1,
        amount=800,
        buyer_email="b@example.com",
        recipient_email="r@example.com",
        deliver_on=timezone.now().date(),
        status=Gift.Status.DELIVERED,
    )
    token = gifts.redemption_token(gift=gift)
    assert client.get(f"/gift/redeem/{token}x/").status_code == 404
    Gift.objects.filter(pk=gift.pk).update(recipient_email="changed@example.com")
    assert client.get(f"/gift/redeem/{token}/").status_code == 404


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("deliver_on", "2001-01-01", "Choose today or a later day."),
        ("recipient_email", "not an address", "Enter a valid email address."),
        ("option", "999-3", "Please choose one of the gifts shown."),
    ],
)
def test_bad_gift_input_is_refused_with_a_clear_error(
    client, monthly, stripe_api, field, value, error
):
    data = {
        "option": f"{monthly.pk}-3",
        "recipient_email": "ada@example.org",
        "buyer_email": "buyer@example.com",
        "deliver_on": timezone.now().date().isoformat(),
        field: value,
    }
    response = client.post("/gift/", data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert Gift.objects.count() == 0
    assert stripe_api.requests_to("POST", "/v1/checkout/sessions") == []


def test_add_months_keeps_the_day_or_takes_the_months_last():
    from datetime import UTC, datetime

    assert gifts.add_months(datetime(2026, 1, 31, 9, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, 9, tzinfo=UTC
    )
    assert gifts.add_months(datetime(2026, 11, 15, tzinfo=UTC), 3) == datetime(
        2027, 2, 15, tzinfo=UTC
    )
    assert gifts.add_months(datetime(2026, 5, 1, tzinfo=UTC), 12) == datetime(
        2027, 5, 1, tzinfo=UTC
    )


def test_an_abandoned_gift_checkout_keeps_nothing(client, stripe_api, stripe_webhooks, monthly):
    abandoned = buy(client, monthly, recipient="left@example.org")
    paid_session = stripe_api.complete_checkout(buy(client, monthly))
    stripe_webhooks.deliver("checkout.session.completed", paid_session)
    expired = {**stripe_api.get("checkout.session", abandoned), "status": "expired"}
    stripe_webhooks.deliver("checkout.session.expired", expired)
    assert list(Gift.objects.values_list("recipient_email", flat=True)) == ["ada@example.org"]


# --- Names that go into headers ------------------------------------------------------

_breaks = st.sampled_from(["\r", "\n", "\r\n", "\x00", "\u2028", "\u2029", "\x85", "\x0b", "\t"])
typed_names = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.text(max_size=12), _breaks), max_size=8).map("".join),
    st.sampled_from(["Grace\r\nBcc: victim@example.com", "Ada\u2028Lovelace", "\x00", "Zoë"]),
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(buyer_name=typed_names, recipient_name=typed_names)
def test_any_typed_name_reaches_the_recipient_in_one_subject_line(
    monthly, buyer_name, recipient_name
):
    from subscriptions.views.gifts import GiftForm

    form = GiftForm(
        data={
            "option": f"{monthly.pk}-3",
            "recipient_email": "ada@example.org",
            "recipient_name": recipient_name,
            "buyer_email": "buyer@example.com",
            "buyer_name": buyer_name,
        },
        options=gifts.gift_options(),
    )
    assert form.is_valid(), form.errors
    names = [form.cleaned_data["buyer_name"], form.cleaned_data["recipient_name"]]
    for name in names:
        assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name)
        assert name == name.strip()
    gift = Gift.objects.create(
        plan=monthly,
        months=3,
        amount=2400,
        buyer_email="buyer@example.com",
        buyer_name=names[0],
        recipient_email="ada@example.org",
        recipient_name=names[1],
        deliver_on=timezone.localdate(),
        status=Gift.Status.PAID,
    )
    mail.outbox.clear()
    assert gifts.deliver_gift(gift_id=gift.pk, now=timezone.now())
    (sent,) = mail.outbox
    parsed = message_from_bytes(sent.message().as_bytes(), policy=email_policy.default)
    # Folding may leave a space where the encoder broke the line; the words are the name.
    subject = " ".join(str(parsed["Subject"]).split())
    assert subject == f"{names[0] or 'Someone'} gave you a subscription"
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ada@example.org"]
    assert parsed["Bcc"] is None
    gift.refresh_from_db()
    assert gift.status == Gift.Status.DELIVERED


def test_a_gift_the_mail_server_refuses_stays_due_and_goes_on_the_next_run(
    monthly, settings, caplog
):
    gift = Gift.objects.create(
        plan=monthly,
        months=1,
        amount=800,
        buyer_email="buyer@example.com",
        buyer_name="Grace",
        recipient_email="ada@example.org",
        deliver_on=timezone.localdate(),
        status=Gift.Status.PAID,
    )
    # A mail server that is not there: the hand-over fails.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    assert gifts.deliver_due_gifts() == 0
    gift.refresh_from_db()
    assert gift.status == Gift.Status.PAID and gift.delivered_at is None
    assert "could not be delivered" in caplog.text

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox.clear()
    assert gifts.deliver_due_gifts() == 1
    assert gifts.deliver_due_gifts() == 0
    (delivery,) = mail.outbox
    assert delivery.to == ["ada@example.org"]
    gift.refresh_from_db()
    assert gift.status == Gift.Status.DELIVERED


def test_with_stripe_off_gifts_say_they_are_not_open_and_a_post_starts_nothing(client, settings):
    settings.STRIPE_SECRET_KEY = ""
    PlanFactory(name="Monthly", amount=800, stripe_price_id="price_left_from_before")
    page = client.get("/gift/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Gift subscriptions are not open yet" in text
    assert 'action="/gift/"' not in text and "/donate/" not in text
    assert "Give a gift subscription" not in client.get("/upgrade/").content.decode()

    plan = Plan.objects.get()
    stale = client.post(
        "/gift/",
        {
            "option": f"{plan.pk}-1",
            "recipient_email": "ada@example.org",
            "buyer_email": "buyer@example.com",
        },
    )
    assert stale.status_code == 503
    assert "Gift subscriptions are not open yet" in stale.content.decode()
    assert not Gift.objects.exists()


def test_with_stripe_on_the_upgrade_page_links_to_gifts(client, monthly):
    assert "Give a gift subscription" in client.get("/upgrade/").content.decode()


def test_gift_days_are_the_publications_days_not_utcs(monthly, settings, monkeypatch, client):
    """In Kiritimati (UTC+14) it is already 2 June at noon UTC on 1 June."""
    from datetime import UTC, date, datetime

    from subscriptions.views.gifts import GiftForm

    settings.TIME_ZONE = "Pacific/Kiritimati"
    noon_utc = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: noon_utc)
    local_today, utc_today = date(2026, 6, 2), date(2026, 6, 1)

    def form(day: date) -> GiftForm:
        data = {
            "option": f"{monthly.pk}-1",
            "recipient_email": "ada@example.org",
            "buyer_email": "buyer@example.com",
            "deliver_on": day.isoformat(),
        }
        return GiftForm(data=data, options=gifts.gift_options())

    yesterday = form(utc_today)
    assert not yesterday.is_valid()
    assert yesterday.errors["deliver_on"] == ["Choose today or a later day."]
    assert form(local_today).is_valid()
    assert f'min="{local_today.isoformat()}"' in client.get("/gift/").content.decode()
    with pytest.raises(gifts.GiftError, match="has passed"):
        gifts.start_gift_checkout(
            option=gifts.gift_options()[0],
            buyer_email="buyer@example.com",
            recipient_email="ada@example.org",
            deliver_on=utc_today,
        )

    # A gift for the local today is due now, although UTC's date is the day before.
    Gift.objects.create(
        plan=monthly,
        months=1,
        amount=800,
        buyer_email="buyer@example.com",
        recipient_email="ada@example.org",
        deliver_on=local_today,
        status=Gift.Status.PAID,
    )
    mail.outbox.clear()
    assert gifts.deliver_due_gifts(now=noon_utc) == 1
    assert [m.to for m in mail.outbox] == [["ada@example.org"]]
