"""One rule for addresses: look-alikes are other readers, spellings of one address are one.

PostgreSQL's case folding maps the dotless i (U+0131) to I and the long s (U+017F) to
S, so an `iexact` lookup once handed `victim@gmail.com`'s paid subscriber to whoever
signed up as `victim@gma<dotless i>l.com` (whose code goes to `xn--gmal-nza.com`, a
domain anyone can register).
"""

from __future__ import annotations

import hashlib
import importlib
import re
import string

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions.models import Membership, Subscriber, Suppression
from subscriptions.services.access import subscriber_is_paid, user_is_paid
from subscriptions.services.accounts import link_reader_account, prepare_sign_in
from subscriptions.services.addresses import (
    InvalidAddress,
    email_hash,
    normalize_email,
    suppress,
    suppressed_among,
    unsuppress,
)
from subscriptions.services.memberships import find_subscriber_for_stripe
from subscriptions.services.signup import subscribe
from subscriptions.services.unsubscribe import record_provider_event
from substack.services import import_substack
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory, UserFactory

pytestmark = pytest.mark.django_db

DOTLESS_I = "\u0131"
LONG_S = "\u017f"
KELVIN = "\u212a"
CODE_RE = re.compile(r"^\s*([A-Z0-9]{4}-[A-Z0-9]{4})\s*$", re.MULTILINE)


def _code(message) -> str:
    match = CODE_RE.search(message.body)
    assert match, message.body
    return match.group(1)


def sign_up_for_an_account(client: Client, email: str):
    """allauth's signup through its pages: the form, then the code from the email."""
    mail.outbox.clear()
    response = client.post("/accounts/signup/", {"email": email})
    if response.status_code != 302:
        return response
    assert len(mail.outbox) == 1
    return client.post("/accounts/confirm-email/", {"code": _code(mail.outbox[0])})


def sign_in_by_code(client: Client, email: str):
    mail.outbox.clear()
    response = client.post("/accounts/login/code/", {"email": email})
    assert response.status_code == 302, response.content.decode()
    assert len(mail.outbox) == 1, [m.subject for m in mail.outbox]
    return client.post("/accounts/login/code/confirm/", {"code": _code(mail.outbox[0])})


def signed_in_user(client: Client):
    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


# --- The rule itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("Mixed.Case@Example.COM", "mixed.case@example.com"),
        ("  reader@example.com ", "reader@example.com"),
        ("anna@B\u00fccher.example", "anna@xn--bcher-kva.example"),
        ("anna@xn--bcher-kva.example", "anna@xn--bcher-kva.example"),
        (f"victim@gma{DOTLESS_I}l.com", "victim@xn--gmal-nza.com"),
        # UTS-46 maps these in a domain, as resolvers do: the same mail domain.
        (f"victim@gma{LONG_S}l.com", "victim@gmasl.com"),
        (f"reader@{KELVIN}ite.example", "reader@kite.example"),
        ("reader@\uff45xample.com", "reader@example.com"),  # full-width e
    ],
)
def test_an_address_has_one_normal_form(typed, normal):
    assert normalize_email(typed) == normal


@pytest.mark.parametrize(
    "typed",
    [
        f"v{DOTLESS_I}ctim@gmail.com",
        f"{LONG_S}am@example.com",
        f"{KELVIN}ate@example.com",
        "zo\u00eb@example.com",
        "not-an-email",
        "a@b",
        '"quoted"@example.com',
        "reader@[192.0.2.1]",
        "",
        "x" * 250 + "@example.com",
    ],
)
def test_addresses_the_rule_cannot_send_to_are_refused_with_a_reason(typed):
    with pytest.raises(InvalidAddress) as refused:
        normalize_email(typed)
    assert str(refused.value)


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        (f"v{DOTLESS_I}ctim@gmail.com", "has non-ASCII characters before the @"),
        # The mailbox is everything before the last @, so a look-alike letter between
        # two @ signs is named for what it is, not as a mere syntax error.
        (f"a@v{DOTLESS_I}ctim@gmail.com", "has non-ASCII characters before the @"),
        ("not-an-email", "is not a valid email address"),
        ("x" * 250 + "@example.com", "is not a valid email address: The email address is too long"),
        # Too long only once the domain is spelled in punycode, the form that is stored.
        ("a" * 60 + "@" + "\u00fc" * 50 + "." + "b" * 63 + "." + "c" * 63 + ".com", "too long"),
    ],
)
def test_the_reason_a_person_reads_names_what_is_wrong_with_the_address(typed, reason):
    with pytest.raises(InvalidAddress) as refused:
        normalize_email(typed)
    assert reason in str(refused.value)


@pytest.mark.parametrize("typed", ["", "   ", "\t\n"])
def test_an_empty_address_is_refused_as_empty(typed):
    with pytest.raises(InvalidAddress) as refused:
        normalize_email(typed)
    assert str(refused.value) == "the email address is empty"


def test_an_address_of_exactly_254_characters_is_accepted_unchanged():
    local = "a" * 64
    domain = "b" * 63 + "." + "c" * 63 + "." + "d" * (254 - 64 - 1 - 128 - 4) + ".com"
    address = f"{local}@{domain}"
    assert len(address) == 254
    assert normalize_email(address) == address


def test_the_suppression_list_keys_an_address_by_its_normal_form():
    suppress(email="Anna@B\u00fccher.example", reason="bounce")
    assert suppressed_among(emails=["anna@xn--bcher-kva.example", "bob@example.com"]) == {
        "anna@xn--bcher-kva.example"
    }
    assert (
        email_hash("anna@xn--bcher-kva.example")
        == hashlib.sha256(b"anna@xn--bcher-kva.example").hexdigest()
    )
    unsuppress(email="ANNA@xn--BCHER-kva.example ")
    assert not Suppression.objects.exists()


def test_an_entry_that_is_no_address_is_found_by_its_trimmed_lower_case_text():
    # Entries stored before the address rule hashed the trimmed, lower-cased text.
    Suppression.objects.create(
        email_hash=hashlib.sha256(b"no address here").hexdigest(), reason="complaint"
    )
    assert suppressed_among(emails=[" No Address HERE "]) == {" No Address HERE "}
    unsuppress(email="NO ADDRESS HERE")
    assert not Suppression.objects.exists()


# Local parts: ASCII atoms with letters in either case, dots between them.
_atom = st.text(alphabet=string.ascii_letters + string.digits + "+-_", min_size=1, max_size=8)
_local = st.lists(_atom, min_size=1, max_size=3).map(".".join)
_label = st.text(alphabet=string.ascii_lowercase + "is", min_size=1, max_size=8)
_domain = st.lists(_label, min_size=1, max_size=2).map(lambda labels: ".".join(labels) + ".com")
_address = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)


def _variants(address: str) -> st.SearchStrategy[str]:
    """Spellings a person or an attacker might type for (or instead of) this address."""

    def respell(choices: list[int]) -> str:
        out = []
        for char, choice in zip(address, choices, strict=False):
            if choice == 1:
                out.append(char.swapcase())
            elif choice == 2 and char == "i":
                out.append(DOTLESS_I)
            elif choice == 2 and char == "s":
                out.append(LONG_S)
            elif choice == 2 and char == "k":
                out.append(KELVIN)
            else:
                out.append(char)
        return "".join(out) + address[len(choices) :]

    return st.lists(st.integers(0, 2), max_size=len(address)).map(respell)


_pairs = _address.flatmap(lambda a: st.tuples(st.just(a), _variants(a)))


def _normal(email: str) -> str | None:
    try:
        return normalize_email(email)
    except InvalidAddress:
        return None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pair=_pairs)
def test_addresses_that_normalise_differently_are_different_readers_everywhere(pair):
    original, other = pair
    Subscriber.objects.all().delete()
    get_user_model().objects.all().delete()
    known = SubscriberFactory(email=original, status=Subscriber.Status.ACTIVE)
    MembershipFactory(subscriber=known)
    same = _normal(other) == known.email

    # Stripe matching by the customer's email.
    found = find_subscriber_for_stripe(email=other)
    assert (found == known) is same
    # Account linking: a verified account with the other address.
    user = UserFactory(email=_normal(other) or "x@example.com")
    linked = link_reader_account(user=user, email=other)
    assert (linked == known) is same
    assert user_is_paid(user=user) is same
    # The provider's bounce report.
    changed = record_provider_event(email=other, event_type="bounced")
    known.refresh_from_db()
    assert (known.status == Subscriber.Status.BOUNCED) is same
    assert changed == (1 if same else 0)
    # The free signup: a different address is a new subscriber, the same one is not.
    if _normal(other) is not None:
        result = subscribe(email=other, ip="203.0.113.9", source="/")
        assert (result.subscriber == known) is same
        assert Subscriber.objects.filter(email=result.subscriber.email).count() == 1
    else:
        with pytest.raises(InvalidAddress):
            subscribe(email=other, ip="203.0.113.9", source="/")
    assert subscriber_is_paid(subscriber=known)


# --- Look-alike signups against a paid reader, through the real pages --------------------


@pytest.fixture
def paid_victim():
    user = UserFactory(email="victim@gmail.com")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    subscriber = SubscriberFactory(
        email="victim@gmail.com", user=user, stripe_customer_id="cus_victim"
    )
    MembershipFactory(subscriber=subscriber)
    return subscriber


def test_a_dotless_i_account_signup_is_a_new_free_reader_not_the_paid_one(paid_victim):
    attacker = Client()
    response = sign_up_for_an_account(attacker, f"victim@gma{DOTLESS_I}l.com")

    assert response.status_code == 302
    # The code went to the domain the attacker typed, in the form mail servers resolve.
    assert mail.outbox[0].to == ["victim@xn--gmal-nza.com"]
    user = signed_in_user(attacker)
    assert user != paid_victim.user
    assert not user_is_paid(user=user)
    export = attacker.get("/account/export/").content.decode()
    assert "cus_victim" not in export
    assert Subscriber.objects.get(user=user).email == "victim@xn--gmal-nza.com"
    paid_victim.refresh_from_db()
    assert paid_victim.user.email == "victim@gmail.com"


def test_a_long_s_before_the_at_is_refused_at_account_signup_and_changes_nothing(paid_victim):
    SubscriberFactory(email="sam@example.com", status=Subscriber.Status.ACTIVE)
    attacker = Client()
    response = sign_up_for_an_account(attacker, f"{LONG_S}am@example.com")

    assert response.status_code == 200
    assert "send to" in response.content.decode()
    assert mail.outbox == []
    assert not get_user_model().objects.filter(email__contains="am@example.com").exists()
    assert Subscriber.objects.get(email="sam@example.com").user is None


def test_a_dotless_i_before_the_at_is_refused_by_the_free_signup(client, paid_victim):
    response = client.post(
        "/subscribe/", {"email": f"v{DOTLESS_I}ctim@gmail.com"}, HTTP_ORIGIN="http://testserver"
    )
    assert response.status_code == 400
    assert Subscriber.objects.count() == 1


def test_a_long_s_domain_is_the_real_domain_so_its_code_goes_to_the_real_owner(paid_victim):
    SubscriberFactory(email="reader@gmasl.com", status=Subscriber.Status.ACTIVE)
    attacker = Client()
    attacker.post("/accounts/login/code/", {"email": f"reader@gma{LONG_S}l.com"})

    assert [m.to for m in mail.outbox] == [["reader@gmasl.com"]]


LOOK_ALIKES = [
    pytest.param("victim@gmail.com", f"victim@gma{DOTLESS_I}l.com", id="dotless-i-domain"),
    pytest.param("victim@gmail.com", f"v{DOTLESS_I}ctim@gmail.com", id="dotless-i-local"),
    pytest.param("sam@gmail.com", f"{LONG_S}am@gmail.com", id="long-s-local"),
]


def _substack_export(tmp_path, email: str):
    """A Substack export with one paid reader (Substack's column layout)."""
    (tmp_path / "posts.csv").write_text(
        "post_id,post_date,is_published,type,audience,title,subtitle\n"
    )
    (tmp_path / "pub_paid_subscribers.csv").write_text(
        "email,expiry,email_disabled,stripe_connected_customer_id,type\n"
        f"{email},2030-01-01T00:00:00.000Z,false,cus_Imported1,paid\n"
    )
    return tmp_path


def _attacker_reached(attacker: Client, victim: Subscriber) -> bool:
    victim.refresh_from_db()
    user_id = attacker.session.get("_auth_user_id")
    if user_id is None:
        return False
    user = get_user_model().objects.get(pk=user_id)
    return victim.user_id == user.pk or user_is_paid(user=user)


@pytest.mark.parametrize(("real", "look_alike"), LOOK_ALIKES)
def test_a_look_alike_account_signup_after_an_import_does_not_reach_the_imported_reader(
    tmp_path, real, look_alike
):
    import_substack(path=_substack_export(tmp_path, real))
    imported = Subscriber.objects.get(email=real)
    attacker = Client()

    sign_up_for_an_account(attacker, look_alike)

    assert not _attacker_reached(attacker, imported)
    owner = Client()
    sign_in_by_code(owner, real)
    assert user_is_paid(user=signed_in_user(owner))
    assert signed_in_user(owner).subscriber == imported


@pytest.mark.parametrize(("real", "look_alike"), LOOK_ALIKES)
def test_an_import_after_a_look_alike_signup_gives_the_membership_to_the_real_address(
    tmp_path, real, look_alike
):
    attacker = Client()
    sign_up_for_an_account(attacker, look_alike)

    import_substack(path=_substack_export(tmp_path, real))

    imported = Subscriber.objects.get(email=real)
    assert subscriber_is_paid(subscriber=imported)
    assert imported.stripe_customer_id == "cus_Imported1"
    assert not _attacker_reached(attacker, imported)
    owner = Client()
    sign_in_by_code(owner, real)
    assert signed_in_user(owner).subscriber == imported
    assert not _attacker_reached(attacker, imported)


@pytest.mark.parametrize("with_account", [False, True], ids=["paid-visitor", "paid-account"])
@pytest.mark.parametrize(("real", "look_alike"), LOOK_ALIKES)
def test_a_look_alike_account_signup_does_not_reach_an_existing_paid_reader(
    real, look_alike, with_account
):
    user = None
    if with_account:
        user = UserFactory(email=real)
        EmailAddress.objects.create(user=user, email=real, verified=True, primary=True)
    # A visitor who paid at /upgrade/ has a subscriber and a Stripe customer, no account.
    victim = SubscriberFactory(email=real, user=user, stripe_customer_id="cus_victim")
    MembershipFactory(subscriber=victim)
    attacker = Client()

    sign_up_for_an_account(attacker, look_alike)

    assert not _attacker_reached(attacker, victim)
    if "_auth_user_id" in attacker.session:
        assert "cus_victim" not in attacker.get("/account/export/").content.decode()


@pytest.mark.parametrize(("real", "look_alike"), LOOK_ALIKES)
def test_a_look_alike_who_signed_up_first_is_not_handed_the_real_reader_s_payment(
    stripe_api, stripe_webhooks, real, look_alike
):
    attacker = Client()
    sign_up_for_an_account(attacker, look_alike)
    price = stripe_api.add_price(unit_amount=800, interval="month")
    PlanFactory(amount=800, stripe_price_id=price["id"])

    # The real reader pays through a Payment Link: matched by the customer's email.
    customer = stripe_api.add_customer(email=real.capitalize())
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
    stripe_webhooks.deliver("customer.subscription.created", subscription)

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.subscriber.email == real
    assert not _attacker_reached(attacker, membership.subscriber)


def test_a_look_alike_bounce_report_leaves_the_real_reader_on_the_list(paid_victim):
    assert record_provider_event(email=f"victim@gma{DOTLESS_I}l.com", event_type="complained") == 0
    paid_victim.refresh_from_db()
    assert paid_victim.status == Subscriber.Status.ACTIVE


def test_a_code_request_for_a_look_alike_prepares_no_account_for_the_real_reader():
    imported = SubscriberFactory(email="imported@gmail.com", imported_from="substack")
    prepare_sign_in(email=f"imported@gma{DOTLESS_I}l.com")
    imported.refresh_from_db()
    assert imported.user_id is None


# --- Readers with capitals before the @ ------------------------------------------------


def test_a_reader_with_capitals_before_the_at_confirms_and_signs_in_by_code(
    client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/subscribe/", {"email": "Mixed.Case@Example.com"}, HTTP_ORIGIN="http://testserver"
        )
    link = re.search(r"https?://testserver(/subscribe/confirm/[^\s\"<]+)", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(link.group(1)).status_code == 200
    client.logout()

    for typed in ("Mixed.Case@example.com", "mixed.case@EXAMPLE.com"):
        reader = Client()
        response = sign_in_by_code(reader, typed)
        assert response.status_code == 302, response.content.decode()
        assert signed_in_user(reader).subscriber.email == "mixed.case@example.com"
    assert EmailAddress.objects.get().email == "mixed.case@example.com"


# --- Existing rows ---------------------------------------------------------------------


def test_the_migration_normalises_stored_addresses_and_reports_collisions_without_merging(
    capsys,
):
    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("subscriptions.migrations.0002_addresses_in_normal_form")
    # Rows as they were stored before the rule (the domain lower-cased only).
    plain = Subscriber.objects.create(email="Mixed.Case@example.com")
    twin_a = Subscriber.objects.create(email="Anna@b\u00fccher.example")
    twin_b = Subscriber.objects.create(email="anna@xn--bcher-kva.example")
    odd = Subscriber.objects.create(email="zo\u00eb@example.com")
    user = UserFactory(email="Staff.Person@example.com")
    EmailAddress.objects.create(user=user, email="Staff.Person@example.com", verified=True)

    with connection.schema_editor() as editor:
        migration.normalise_addresses(apps, editor)

    plain.refresh_from_db()
    assert plain.email == "mixed.case@example.com"
    twin_a.refresh_from_db()
    twin_b.refresh_from_db()
    assert (twin_a.email, twin_b.email) == (
        "Anna@b\u00fccher.example",
        "anna@xn--bcher-kva.example",
    )
    odd.refresh_from_db()
    assert odd.email == "zo\u00eb@example.com"
    assert EmailAddress.objects.get().email == "staff.person@example.com"
    user.refresh_from_db()
    assert user.email == "staff.person@example.com"
    out = capsys.readouterr().out
    assert f"Subscriber {min(twin_a.pk, twin_b.pk)}, {max(twin_a.pk, twin_b.pk)}" in out
    assert "'anna@xn--bcher-kva.example'" in out
    assert f"Subscriber {odd.pk}:" in out


def test_the_admin_search_for_a_look_alike_does_not_list_the_real_reader(editor_client):
    SubscriberFactory(email="victim@gmail.com")
    SubscriberFactory(email="other@example.com")

    look_alike = editor_client.get(
        "/admin/subscriptions/subscriber/", {"q": f"victim@gma{DOTLESS_I}l.com"}
    )
    real = editor_client.get("/admin/subscriptions/subscriber/", {"q": "Victim@Gmail.com"})
    part = editor_client.get("/admin/subscriptions/subscriber/", {"q": "VICTIM"})

    assert "victim@gmail.com" not in look_alike.content.decode()
    assert "victim@gmail.com" in real.content.decode()
    assert "victim@gmail.com" in part.content.decode()
    assert "other@example.com" not in real.content.decode()


def test_a_subscriber_added_in_the_admin_is_stored_in_the_normal_form(editor_client):
    response = editor_client.post(
        "/admin/subscriptions/subscriber/add/",
        {"email": "New.Person@B\u00fccher.example", "name": "", "status": "active"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Subscriber.objects.get().email == "new.person@xn--bcher-kva.example"
