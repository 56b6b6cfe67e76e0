"""Reader accounts: sign-in by emailed code, the account page, data export, erasure."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from newsletter.models import Comment, CommentBan, Delivery, EmailSend
from subscriptions.models import Donation, Membership, StripeEvent, Subscriber, Suppression
from subscriptions.services.addresses import email_hash, suppress
from subscriptions.services.imports import import_subscribers_csv
from substack.services import import_substack
from tests.factories import (
    MembershipFactory,
    PublishedArticleFactory,
    SubscriberFactory,
    UserFactory,
)
from tests.substack.test_import import EXPORT

pytestmark = pytest.mark.django_db

CODE_RE = re.compile(r"^\s*([A-Z0-9]{4}-[A-Z0-9]{4})\s*$", re.MULTILINE)


def sign_in_by_code(client, email: str):
    """The reader's sign-in: ask for a code, read it from the email, enter it."""
    mail.outbox.clear()
    response = client.post("/accounts/login/code/", {"email": email})
    assert response.status_code == 302, response.content
    assert len(mail.outbox) == 1, [m.subject for m in mail.outbox]
    match = CODE_RE.search(mail.outbox[0].body)
    assert match, mail.outbox[0].body
    return client.post("/accounts/login/code/confirm/", {"code": match.group(1)})


@pytest.fixture
def reader(django_user_model):
    user = UserFactory(email="reader@example.com")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    subscriber = SubscriberFactory(email="reader@example.com", user=user)
    return subscriber


def test_an_imported_paid_subscriber_signs_in_by_code_and_is_paid(client):
    import_substack(path=EXPORT)

    response = sign_in_by_code(client, "paid.reader@example.com")

    assert response.status_code == 302
    assert response["Location"] == "/account/"
    page = client.get("/account/")
    assert page.status_code == 200
    assert b"paid subscriber" in page.content
    assert b"1 January 2030" in page.content


def test_an_imported_reader_with_email_disabled_still_signs_in_and_is_paid(client):
    import_substack(path=EXPORT)
    assert Subscriber.objects.get(email="no.expiry@example.com").status == "unsubscribed"

    response = sign_in_by_code(client, "no.expiry@example.com")

    assert response["Location"] == "/account/"
    assert b"paid subscriber" in client.get("/account/").content


def test_a_csv_imported_subscriber_signs_in_by_code_straight_away(client):
    import_subscribers_csv(stream=io.BytesIO(b"email\nfrom.csv@example.com\n"), file="x.csv")
    response = sign_in_by_code(client, "From.CSV@example.com")
    assert response["Location"] == "/account/"
    assert b"free subscriber" in client.get("/account/").content


def test_a_subscriber_without_an_account_gets_one_at_first_sign_in(client):
    subscriber = SubscriberFactory(email="old.timer@example.com")
    assert subscriber.user is None
    response = sign_in_by_code(client, "old.timer@example.com")
    assert response["Location"] == "/account/"
    subscriber.refresh_from_db()
    assert subscriber.user is not None
    assert subscriber.user.email == "old.timer@example.com"


def test_a_stranger_s_unfinished_signup_for_an_address_is_not_handed_its_subscriber(client):
    SubscriberFactory(email="paid.target@example.com")
    stranger = Client()
    stranger.post("/accounts/signup/", {"email": "paid.target@example.com"})
    unverified = get_user_model().objects.get(email="paid.target@example.com")
    assert not EmailAddress.objects.filter(user=unverified, verified=True).exists()

    sign_in_by_code(client, "paid.target@example.com")

    subscriber = Subscriber.objects.get(email="paid.target@example.com")
    assert subscriber.user is not None
    assert subscriber.user != unverified
    assert client.session["_auth_user_id"] == str(subscriber.user.pk)
    assert not EmailAddress.objects.filter(user=unverified, verified=True).exists()


def test_a_pending_reader_signs_in_by_code_and_only_the_code_verifies_the_address():
    pending = SubscriberFactory(email="unconfirmed@example.com", status=Subscriber.Status.PENDING)
    client = Client()
    client.post("/accounts/login/code/", {"email": "unconfirmed@example.com"})
    # Asking for a code proves nothing yet: the address is not verified.
    assert not EmailAddress.objects.filter(email="unconfirmed@example.com", verified=True).exists()
    client.post("/accounts/login/code/confirm/", {"code": "AAAA-AAAA"})
    assert "_auth_user_id" not in client.session  # a wrong code signs nobody in
    code = CODE_RE.search(mail.outbox[-1].body)
    assert code, mail.outbox[-1].body

    response = client.post("/accounts/login/code/confirm/", {"code": code.group(1)})

    assert response.status_code == 302
    pending.refresh_from_db()
    assert client.session["_auth_user_id"] == str(pending.user_id)
    assert EmailAddress.objects.get(email="unconfirmed@example.com").verified
    # Signing in is not a newsletter opt-in: the subscription stays unconfirmed.
    assert pending.status == Subscriber.Status.PENDING


def test_signing_up_for_an_account_verifies_by_code_and_makes_a_linked_subscriber(client):
    response = client.post("/accounts/signup/", {"email": "fresh@example.com"})
    assert response.status_code == 302
    assert not Subscriber.objects.exists()
    code = CODE_RE.search(mail.outbox[-1].body)
    assert code, mail.outbox[-1].body

    response = client.post("/accounts/confirm-email/", {"code": code.group(1)})

    assert response.status_code == 302
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "fresh@example.com"
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.user == get_user_model().objects.get(email="fresh@example.com")
    assert subscriber.consent_source == "account signup"


# --- A signup finished by a sign-in code ------------------------------------------------


@pytest.fixture
def other_readers():
    """Readers besides the one under test, in every state, to catch a change to the wrong row."""
    linked = UserFactory(email="linked@example.com")
    EmailAddress.objects.create(user=linked, email=linked.email, verified=True, primary=True)
    return [
        SubscriberFactory(email="linked@example.com", user=linked),
        SubscriberFactory(email="active@example.com"),
        SubscriberFactory(email="pending@example.com", status=Subscriber.Status.PENDING),
        SubscriberFactory(email="gone@example.com", status=Subscriber.Status.UNSUBSCRIBED),
    ]


def _as_stored(subscribers):
    return [
        Subscriber.objects.filter(pk=s.pk)
        .values("email", "status", "user_id", "consent_at", "consent_source", "confirmed_at")
        .get()
        for s in subscribers
    ]


def test_an_account_signup_finished_by_a_sign_in_code_signs_in_and_turns_the_newsletter_on_later(
    other_readers,
):
    before = _as_stored(other_readers)
    Client().post("/accounts/signup/", {"email": "late@example.com"})  # the code is never entered
    account = get_user_model().objects.get(email="late@example.com")

    later = Client()
    sign_in_by_code(later, "late@example.com")

    assert later.session["_auth_user_id"] == str(account.pk)
    assert EmailAddress.objects.get(user=account, email="late@example.com").verified
    # Whoever started the signup may not own the address: signing in is no opt-in.
    assert not Subscriber.objects.filter(email="late@example.com").exists()
    assert _as_stored(other_readers) == before

    later.post("/account/newsletter/", {"enabled": "1"})

    subscriber = Subscriber.objects.get(email="late@example.com")
    assert subscriber.user == account
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.consent_ip == "127.0.0.1"
    assert timezone.now() - subscriber.consent_at < timedelta(minutes=1)
    assert Subscriber.objects.count() == len(other_readers) + 1


@pytest.mark.parametrize("account_first", [True, False], ids=["account-first", "form-first"])
def test_a_reader_who_finished_neither_the_subscribe_form_nor_the_account_signup_is_linked(
    other_readers, account_first
):
    def sign_up() -> None:
        Client().post("/accounts/signup/", {"email": "late@example.com"})

    def subscribe() -> None:
        response = Client().post("/subscribe/", {"email": "late@example.com", "website": ""})
        assert response.status_code == 200

    for step in (sign_up, subscribe) if account_first else (subscribe, sign_up):
        step()
    account = get_user_model().objects.get(email="late@example.com")
    before = _as_stored(other_readers)
    [pending] = _as_stored(Subscriber.objects.filter(email="late@example.com"))
    assert pending["status"] == Subscriber.Status.PENDING

    later = Client()
    sign_in_by_code(later, "late@example.com")

    assert later.session["_auth_user_id"] == str(account.pk)
    assert get_user_model().objects.filter(email="late@example.com").count() == 1
    subscriber = Subscriber.objects.get(email="late@example.com")
    assert subscriber.user == account
    # The confirmation link is still the opt-in: signing in is none.
    assert subscriber.status == Subscriber.Status.PENDING
    assert subscriber.confirmed_at is None
    assert subscriber.consent_at == pending["consent_at"]
    assert subscriber.consent_source == pending["consent_source"]
    assert _as_stored(other_readers) == before


def test_an_unproved_address_on_an_account_with_a_proved_one_is_no_unfinished_signup(
    other_readers,
):
    editor = UserFactory(email="editor@example.com")
    EmailAddress.objects.create(user=editor, email=editor.email, verified=True, primary=True)
    EmailAddress.objects.create(user=editor, email="late@example.com", verified=False)
    pending = SubscriberFactory(email="late@example.com", status=Subscriber.Status.PENDING)

    Client().post("/accounts/login/code/", {"email": "late@example.com"})

    pending.refresh_from_db()
    # The pending subscriber gets an account of its own, as it would without the address.
    assert pending.user is not None
    assert pending.user != editor
    assert not EmailAddress.objects.filter(user=pending.user, verified=True).exists()


def test_a_pending_subscriber_an_unfinished_signup_s_sign_in_code_proves_is_linked_to_it(
    other_readers,
):
    before = _as_stored(other_readers)
    Client().post("/accounts/signup/", {"email": "late@example.com"})
    account = get_user_model().objects.get(email="late@example.com")
    later = Client()
    mail.outbox.clear()
    later.post("/accounts/login/code/", {"email": "late@example.com"})
    # While the code is on its way, the reader fills in the subscribe form too.
    pending = SubscriberFactory(
        email="late@example.com",
        status=Subscriber.Status.PENDING,
        confirmed_at=None,
        consent_source="signup form",
    )

    code = CODE_RE.search(mail.outbox[-1].body)
    assert code, mail.outbox[-1].body
    later.post("/accounts/login/code/confirm/", {"code": code.group(1)})

    pending.refresh_from_db()
    assert later.session["_auth_user_id"] == str(account.pk)
    assert pending.user == account
    assert pending.status == Subscriber.Status.PENDING
    assert pending.confirmed_at is None
    assert pending.consent_source == "signup form"
    assert Subscriber.objects.filter(email="late@example.com").count() == 1
    assert _as_stored(other_readers) == before


def test_a_reader_who_turned_the_newsletter_off_long_ago_is_not_resubscribed_by_signing_in(
    other_readers,
):
    user = UserFactory(email="quiet@example.com")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    quiet = SubscriberFactory(
        email="quiet@example.com", user=user, status=Subscriber.Status.UNSUBSCRIBED
    )
    before = _as_stored([quiet, *other_readers])

    client = Client()
    sign_in_by_code(client, "quiet@example.com")

    assert client.session["_auth_user_id"] == str(user.pk)
    assert _as_stored([quiet, *other_readers]) == before


def test_signing_in_by_code_to_a_verified_account_without_a_subscriber_subscribes_nobody(
    other_readers,
):
    editor = UserFactory(email="editor.only@example.com")
    EmailAddress.objects.create(user=editor, email=editor.email, verified=True, primary=True)

    client = Client()
    sign_in_by_code(client, "editor.only@example.com")

    assert client.session["_auth_user_id"] == str(editor.pk)
    assert not Subscriber.objects.filter(email="editor.only@example.com").exists()
    assert Subscriber.objects.count() == len(other_readers)


def test_a_stranger_s_open_signup_gets_no_way_in_once_the_owner_signs_in_by_code(other_readers):
    stranger = Client()
    stranger.post("/accounts/signup/", {"email": "owner@example.com"})
    account = get_user_model().objects.get(email="owner@example.com")
    assert stranger.get("/accounts/confirm-email/").status_code == 200  # waiting for the code

    owner = Client()
    sign_in_by_code(owner, "owner@example.com")
    assert owner.session["_auth_user_id"] == str(account.pk)

    # The stranger's signup is still open in their browser, waiting for the code.
    stranger.get("/accounts/confirm-email/")
    stranger.post("/accounts/confirm-email/", {"action": "resend"})
    stranger.post("/accounts/confirm-email/", {"code": "AAAA-AAAA"})
    stranger.post("/accounts/confirm-email/", {"action": "change", "email": "mine@example.com"})
    stranger.get("/accounts/login/")
    stranger.get("/account/")

    assert "_auth_user_id" not in stranger.session
    assert not EmailAddress.objects.filter(email="mine@example.com").exists()
    assert get_user_model().objects.get(pk=account.pk).email == "owner@example.com"


def test_an_editor_marking_a_signup_s_address_verified_gives_no_newsletter_consent(
    client, other_readers
):
    Client().post("/accounts/signup/", {"email": "late@example.com"})
    address = EmailAddress.objects.get(email="late@example.com")
    editor = UserFactory(username="chief", is_staff=True, is_superuser=True)
    client.force_login(editor)

    response = client.post(
        "/admin/account/emailaddress/",
        {"action": "make_verified", "_selected_action": [address.pk]},
    )

    assert response.status_code == 302
    address.refresh_from_db()
    assert address.verified
    assert not Subscriber.objects.filter(email="late@example.com").exists()


# Anyone can start an account signup for any address, so an unfinished one is no one's
# consent: only its owner entering the signup's own code is.


def test_a_stranger_s_subscribe_form_and_signup_are_not_confirmed_by_the_owner_signing_in(
    other_readers,
):
    stranger = Client()
    stranger.post("/subscribe/", {"email": "target@example.com", "website": ""})
    stranger.post("/accounts/signup/", {"email": "target@example.com"})
    before = _as_stored(other_readers)

    owner = Client()
    sign_in_by_code(owner, "target@example.com")

    subscriber = Subscriber.objects.get(email="target@example.com")
    assert owner.session["_auth_user_id"] == str(subscriber.user_id)
    # As for a pending subscriber with no signup: signing in is no opt-in.
    assert subscriber.status == Subscriber.Status.PENDING
    assert subscriber.confirmed_at is None
    assert _as_stored(other_readers) == before


def test_a_reader_who_deleted_their_account_is_not_put_back_by_a_stranger_s_signup(
    other_readers,
):
    suppress(email="gone.for.good@example.com", reason="account deleted")
    Client().post("/accounts/signup/", {"email": "gone.for.good@example.com"})

    owner = Client()
    sign_in_by_code(owner, "gone.for.good@example.com")

    assert "_auth_user_id" in owner.session
    assert not Subscriber.objects.filter(email="gone.for.good@example.com").exists()
    assert Suppression.objects.filter(email_hash=email_hash("gone.for.good@example.com")).exists()
    assert Subscriber.objects.count() == len(other_readers)


def test_one_reader_across_signup_subscribe_form_and_sign_in_in_any_spelling(other_readers):
    Client().post("/accounts/signup/", {"email": "Late@Bücher.DE"})
    Client().post("/subscribe/", {"email": "LATE@xn--bcher-kva.de", "website": ""})

    owner = Client()
    sign_in_by_code(owner, "late@BÜCHER.de")

    [account] = get_user_model().objects.filter(email="late@xn--bcher-kva.de")
    assert owner.session["_auth_user_id"] == str(account.pk)
    assert Subscriber.objects.get(email="late@xn--bcher-kva.de").user == account
    assert EmailAddress.objects.filter(email__contains="late@").count() == 1


def test_signups_for_a_plus_address_or_a_look_alike_domain_are_not_the_reader_s(
    other_readers,
):
    Client().post("/accounts/signup/", {"email": "late+news@example.com"})
    Client().post("/accounts/signup/", {"email": "late@exampl\u0435.com"})  # Cyrillic e
    others = set(
        EmailAddress.objects.filter(email__startswith="late").values_list("user_id", flat=True)
    )
    pending = SubscriberFactory(email="late@example.com", status=Subscriber.Status.PENDING)

    owner = Client()
    sign_in_by_code(owner, "late@example.com")

    pending.refresh_from_db()
    assert pending.user_id not in others
    assert owner.session["_auth_user_id"] == str(pending.user_id)
    assert len(others) == 2
    assert not EmailAddress.objects.filter(user_id__in=others, verified=True).exists()


def test_the_account_page_needs_a_signed_in_reader(client):
    for path in ["/account/", "/account/export/", "/account/delete/"]:
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_pages_showing_a_signed_in_reader_s_address_are_kept_by_no_shared_cache(client, reader):
    client.force_login(reader.user)
    for path in ["/account/", "/account/name/", "/account/delete/", "/accounts/email/"]:
        response = client.get(path)
        assert response.status_code == 200, path
        directives = {d.strip() for d in response["Cache-Control"].split(",")}
        assert {"private", "no-cache"} <= directives, (path, response["Cache-Control"])
    # A view's own choice stands: the export says no-store.
    assert "no-store" in client.get("/account/export/")["Cache-Control"]


def test_a_signed_out_visitor_s_answers_are_not_marked_private_by_it(client):
    response = client.get("/account/")  # looks at who is signed in: nobody
    assert response.status_code == 302
    assert not response.has_header("Cache-Control")


def test_the_reader_turns_the_newsletter_off_and_on(client, reader):
    client.force_login(reader.user)
    assert b"Turn the newsletter off" in client.get("/account/").content

    client.post("/account/newsletter/", {"enabled": ""})
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.UNSUBSCRIBED
    assert b"Turn the newsletter on" in client.get("/account/").content

    client.post("/account/newsletter/", {"enabled": "on"})
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE
    assert reader.consent_source == "account page"


def test_the_account_page_shows_the_comment_name_and_links_to_change_it(client, reader):
    reader.user.first_name = "Ada <Lovelace>"
    reader.user.save()
    client.force_login(reader.user)
    body = client.get("/account/").content.decode()
    assert "Ada &lt;Lovelace&gt;" in body
    assert 'href="/account/name/' in body
    assert client.get("/account/name/").status_code == 200


def test_the_newsletter_toggle_needs_a_csrf_token(reader):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reader.user)
    assert client.post("/account/newsletter/", {"enabled": ""}).status_code == 403
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE


@pytest.fixture
def rich_reader(reader):
    article = PublishedArticleFactory(title="The Strait in Winter")
    send = EmailSend.objects.create(article=article, audience="everyone")
    Delivery.objects.create(send=send, subscriber=reader, status="sent")
    MembershipFactory(subscriber=reader)
    Comment.objects.create(article=article, user=reader.user, body="A sharp piece, thanks.")
    CommentBan.objects.create(user=reader.user, reason="Insults in the Zürich thread")
    Donation.objects.create(
        amount=500, email="reader@example.com", message="Keep going", status="paid"
    )
    Subscriber.objects.filter(pk=reader.pk).update(
        name="Rita Reader", consent_ip="203.0.113.9", stripe_customer_id="cus_rita"
    )
    reader.refresh_from_db()
    return reader


def test_the_data_export_contains_everything_stored_about_the_reader(client, rich_reader):
    client.force_login(rich_reader.user)

    response = client.get("/account/export/")

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    data = json.loads(response.content)
    for field in Subscriber._meta.concrete_fields:
        assert field.attname in data["subscriber"], field.attname
    assert data["subscriber"]["name"] == "Rita Reader"
    assert data["subscriber"]["consent_ip"] == "203.0.113.9"
    assert data["subscriber"]["stripe_customer_id"] == "cus_rita"
    assert data["account"]["email"] == "reader@example.com"
    assert "password" not in data["account"]
    assert [a["email"] for a in data["email_addresses"]] == ["reader@example.com"]
    assert data["paid"] is True
    assert [m["stripe_subscription_id"] for m in data["memberships"]] == [
        Membership.objects.get().stripe_subscription_id
    ]
    assert [d["article_title"] for d in data["deliveries"]] == ["The Strait in Winter"]
    assert [c["body"] for c in data["comments"]] == ["A sharp piece, thanks."]
    assert data["comment_ban"]["reason"] == "Insults in the Zürich thread"
    assert [d["message"] for d in data["donations"]] == ["Keep going"]


def test_deleting_the_account_leaves_only_the_suppression_entry(client, rich_reader):
    Membership.objects.update(status=Membership.Status.CANCELED)
    invoice = {
        "object": "invoice",
        "customer": "cus_rita",
        "customer_email": "Reader@Example.com",
        "customer_name": "Rita Reader",
    }
    applied = StripeEvent.objects.create(
        stripe_id="evt_rita_invoice",
        type="invoice.paid",
        created=timezone.now(),
        payload={"id": "evt_rita_invoice", "data": {"object": invoice}},
        processed_at=timezone.now(),
    )
    someone_else = StripeEvent.objects.create(
        stripe_id="evt_other",
        type="invoice.paid",
        created=timezone.now(),
        payload={"data": {"object": {"customer": "cus_other", "customer_name": "Otto"}}},
        processed_at=timezone.now(),
    )
    client.force_login(rich_reader.user)
    assert client.get("/account/delete/").status_code == 200

    response = client.post("/account/delete/", {"confirm": "on"})

    assert response.status_code == 200
    assert b"deleted" in response.content
    assert not Subscriber.objects.exists()
    assert not get_user_model().objects.exists()
    assert not EmailAddress.objects.exists()
    assert not Membership.objects.exists()
    assert not Comment.objects.exists()
    assert not Delivery.objects.exists()
    donation = Donation.objects.get()
    assert (donation.email, donation.message, donation.amount) == ("", "", 500)
    assert list(Suppression.objects.values_list("email_hash", "reason")) == [
        (email_hash("reader@example.com"), "account deleted")
    ]
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert "reader@example.com" not in dump.getvalue().lower()
    assert "Rita" not in dump.getvalue()
    assert "cus_rita" not in dump.getvalue()
    # The ledger keeps the event (so it is never applied twice), without its details.
    assert StripeEvent.objects.get(pk=applied.pk).stripe_id == "evt_rita_invoice"
    assert StripeEvent.objects.get(pk=someone_else.pk).payload == someone_else.payload
    # Signed out, and the erased address is never imported again.
    assert client.get("/account/").status_code == 302
    report = import_subscribers_csv(stream=io.BytesIO(b"email\nreader@example.com\n"), file="x")
    assert report.suppressed == 1
    assert not Subscriber.objects.exists()


def test_an_unverified_address_on_the_account_reaches_neither_its_owners_donations_nor_mail(
    client, reader
):
    # allauth lets a reader add any address; it stays unverified until its owner confirms.
    EmailAddress.objects.create(user=reader.user, email="someone.else@example.com")
    theirs = Donation.objects.create(
        amount=2500, email="Someone.Else@example.com", message="For the Zürich piece"
    )
    client.force_login(reader.user)

    data = json.loads(client.get("/account/export/").content)
    assert data["donations"] == []

    client.post("/account/delete/", {"confirm": "on"})
    assert not Subscriber.objects.filter(pk=reader.pk).exists()
    theirs.refresh_from_db()
    assert (theirs.email, theirs.message) == ("Someone.Else@example.com", "For the Zürich piece")
    assert list(Suppression.objects.values_list("email_hash", flat=True)) == [
        email_hash("reader@example.com")
    ]


def test_deleting_the_account_keeps_stripe_events_of_a_longer_address_that_contains_it(
    client, reader
):
    payload = {"data": {"object": {"customer_email": "thereader@example.com"}}}
    event = StripeEvent.objects.create(
        stripe_id="evt_neighbour",
        type="invoice.paid",
        created=timezone.now(),
        payload=payload,
        processed_at=timezone.now(),
    )
    client.force_login(reader.user)
    client.post("/account/delete/", {"confirm": "on"})
    assert not Subscriber.objects.filter(pk=reader.pk).exists()
    event.refresh_from_db()
    assert event.payload == payload


def test_deleting_is_refused_while_a_stripe_subscription_still_renews(client, rich_reader):
    client.force_login(rich_reader.user)
    response = client.post("/account/delete/", {"confirm": "on"}, follow=True)
    assert b"Cancel it under Billing" in response.content
    assert Subscriber.objects.filter(pk=rich_reader.pk).exists()
    assert not Suppression.objects.exists()


def test_deleting_needs_the_confirmation_box(client, reader):
    client.force_login(reader.user)
    response = client.post("/account/delete/", {})
    assert response.status_code == 200
    assert Subscriber.objects.filter(pk=reader.pk).exists()


def test_an_editor_cannot_erase_their_account_from_the_reader_page(client):
    from tests.factories import StaffUserFactory

    editor = StaffUserFactory()
    client.force_login(editor)
    response = client.post("/account/delete/", {"confirm": "on"}, follow=True)
    assert b"managed in the admin" in response.content
    assert get_user_model().objects.filter(pk=editor.pk).exists()
    assert not Suppression.objects.exists()


def test_the_sign_in_pages_use_the_site_layout_and_ask_for_no_password(client):
    SubscriberFactory(email="pages@example.com")
    login = client.get("/accounts/login/")
    assert login.status_code == 200
    assert b'class="site-header"' in login.content
    assert b'action="/accounts/login/code/"' in login.content
    assert b'type="password"' not in login.content
    client.post("/accounts/login/code/", {"email": "pages@example.com"})
    confirm = client.get("/accounts/login/code/confirm/")
    assert confirm.status_code == 200
    assert b'name="code"' in confirm.content
    assert b'class="site-header"' in confirm.content
    signup = client.get("/accounts/signup/")
    assert b'type="password"' not in signup.content


def test_an_imported_paid_reader_signs_in_and_reads_an_imported_paid_article(client):
    import_substack(path=EXPORT)
    paid_text = b"names in the ledger"

    anonymous = client.get("/p/sanctions-ledger/")
    assert anonymous.status_code == 200
    assert b"opening about the ledger" in anonymous.content
    assert paid_text not in anonymous.content

    sign_in_by_code(client, "paid.reader@example.com")
    assert paid_text in client.get("/p/sanctions-ledger/").content

    client.logout()
    sign_in_by_code(client, "free.reader@example.com")
    assert paid_text not in client.get("/p/sanctions-ledger/").content


def test_deleting_an_account_keeps_other_readers_replies_under_an_anonymous_placeholder(
    client, reader
):
    article = PublishedArticleFactory()
    answered = Comment.objects.create(article=article, user=reader.user, body="My first take.")
    own_reply = Comment.objects.create(
        article=article, user=reader.user, parent=answered, body="Adding to myself."
    )
    alone = Comment.objects.create(article=article, user=reader.user, body="Nobody answered.")
    other = UserFactory(first_name="Olga")
    reply = Comment.objects.create(
        article=article, user=other, parent=answered, body="I disagree, politely."
    )
    client.force_login(reader.user)

    assert client.post("/account/delete/", {"confirm": "on"}).status_code == 200

    answered.refresh_from_db()
    assert (answered.status, answered.body, answered.user_id) == ("deleted", "", None)
    assert not Comment.objects.filter(pk__in=[own_reply.pk, alone.pk]).exists()
    reply.refresh_from_db()
    assert reply.parent_id == answered.pk
    page = client.get(article.get_absolute_url()).content.decode()
    assert "I disagree, politely." in page
    assert "My first take." not in page
