"""Import from a Substack export (ARCHITECTURE.md flow 9)."""

from __future__ import annotations

import shutil
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler
from io import BytesIO, StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from PIL import Image

from newsletter.models import Article, Delivery, EmailSend, TelegramPost
from newsletter.services.content import PAYWALL_MARKER, split_at_paywall
from newsletter.services.email_rendering import render_article_email
from subscriptions.models import Membership, Plan, StripeEvent, Subscriber
from subscriptions.services.access import paid_subscribers, subscriber_is_paid
from subscriptions.services.billing import active_plans, sync_stripe_plans
from substack.services import convert_post_body, import_substack
from tests.factories import ArticleFactory, PlanFactory, SubscriberFactory
from tests.fakes.base import LocalHTTPServer

pytestmark = pytest.mark.django_db

EXPORT = Path(__file__).resolve().parent.parent / "fixtures" / "substack" / "export"


def zipped(tmp_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in EXPORT.rglob("*"):
            if file.is_file():
                zf.write(file, f"broadside-export/{file.relative_to(EXPORT).as_posix()}")
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return archive


def snapshot() -> dict[str, list[tuple]]:
    return {
        "articles": list(Article.objects.order_by("pk").values_list()),
        "subscribers": list(Subscriber.objects.order_by("pk").values_list()),
        "memberships": list(Membership.objects.order_by("pk").values_list()),
    }


def test_posts_are_archived_published_without_being_sent_and_drafts_kept_as_drafts():
    report = import_substack(path=EXPORT)

    assert report.articles_created == 5
    strait = Article.objects.get(external_id="substack:101")
    assert strait.status == Article.Status.PUBLISHED
    assert strait.published_at == datetime(2024, 1, 15, 8, 30, tzinfo=UTC)
    assert strait.slug == "the-strait-in-winter"
    assert strait.title == "The Strait in Winter"
    assert strait.subtitle == "Shipping lanes and the ice"
    assert strait.visibility == Article.Visibility.PUBLIC
    # Nothing went out again: no email send, no Telegram post, and none would be made.
    assert not EmailSend.objects.exists()
    assert not TelegramPost.objects.exists()
    assert strait.email_audience == Article.EmailAudience.NOBODY
    assert strait.post_to_telegram is False

    draft = Article.objects.get(external_id="substack:103")
    assert draft.status == Article.Status.DRAFT
    assert draft.published_at is None
    assert draft.title == "Untitled draft"
    new_article = Article()
    assert draft.email_audience == new_article.email_audience
    assert draft.post_to_telegram == new_article.post_to_telegram
    assert draft.comments_enabled == new_article.comments_enabled
    assert "flags of convenience" in draft.body


def test_images_and_captions_are_kept_and_unsafe_markup_dropped():
    report = import_substack(path=EXPORT)
    body = Article.objects.get(external_id="substack:101").body
    # The picture's host does not exist: it is reported and keeps its address.
    assert report.images_failed == 1
    assert any(
        p.file == "posts/101.the-strait-in-winter.html" and "kept where it is" in p.message
        for p in report.warnings
    )
    assert 'src="https://substack-post-media.s3.example/public/images/strait.jpeg"' in body
    assert "<figcaption>Tankers waiting off the strait, January.</figcaption>" in body
    assert 'alt="Tankers at anchor"' in body
    assert "<script" not in body
    assert "alert(" not in body
    assert "onclick" not in body
    assert "Insurers noticed first." in body


def test_the_paywall_jump_becomes_the_paywall_marker_and_audiences_map_to_visibility():
    import_substack(path=EXPORT)
    ledger = Article.objects.get(external_id="substack:102")
    assert ledger.visibility == Article.Visibility.PAID
    assert ledger.body.count(PAYWALL_MARKER) == 1
    free, paid = split_at_paywall(html=ledger.body)
    assert "opening about the ledger" in free
    assert "names in the ledger" not in free
    assert "names in the ledger" in paid
    assert "paywall-jump" not in ledger.body
    assert Article.objects.get(external_id="substack:106").visibility == "paid"
    zurich = Article.objects.get(external_id="substack:107")
    assert zurich.visibility == Article.Visibility.SUBSCRIBERS
    assert zurich.title == "Zürich talks — what changed"
    assert "Grüße aus Zürich" in zurich.body
    assert zurich.published_at == datetime(2024, 3, 20, 8, 0, tzinfo=UTC)


def test_a_slug_already_used_on_the_site_gets_the_post_number():
    ArticleFactory(slug="the-strait-in-winter")
    import_substack(path=EXPORT)
    assert Article.objects.get(external_id="substack:101").slug == "the-strait-in-winter-101"


def test_free_paid_comp_and_gift_subscribers_come_across_with_memberships():
    report = import_substack(path=EXPORT)

    assert report.created == 9
    free = Subscriber.objects.get(email="free.reader@example.com")
    assert free.status == Subscriber.Status.ACTIVE
    assert free.consent_at == datetime(2023, 5, 1, 10, 0, tzinfo=UTC)
    assert free.imported_from == "substack"
    assert not subscriber_is_paid(subscriber=free)

    paid = Subscriber.objects.get(email="paid.reader@example.com")
    assert paid.stripe_customer_id == "cus_PaidReader001"
    membership = paid.memberships.get()
    assert membership.kind == Membership.Kind.COMP
    assert membership.imported_from == "substack:paid"
    assert membership.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert subscriber_is_paid(subscriber=paid)

    comp = Subscriber.objects.get(email="comp.reader@example.com").memberships.get()
    assert (comp.kind, comp.status) == (Membership.Kind.COMP, Membership.Status.ACTIVE)
    gift = Subscriber.objects.get(email="gift.reader@example.com").memberships.get()
    assert gift.kind == Membership.Kind.GIFT
    assert gift.expires_at == datetime(2031, 6, 30, tzinfo=UTC)

    lapsed = Subscriber.objects.get(email="lapsed.paid@example.com")
    assert lapsed.memberships.get().status == Membership.Status.EXPIRED
    assert not subscriber_is_paid(subscriber=lapsed)

    # email_disabled: never emailed, but still reads what they paid for.
    no_expiry = Subscriber.objects.get(email="no.expiry@example.com")
    assert no_expiry.status == Subscriber.Status.UNSUBSCRIBED
    assert subscriber_is_paid(subscriber=no_expiry)
    assert Subscriber.objects.get(email="quiet.reader@example.com").status == "unsubscribed"

    assert report.memberships_created == 5


def test_non_ascii_addresses_import_or_are_rejected_with_a_reason():
    report = import_substack(path=EXPORT)
    # Stored as the mail server resolves it: the domain in IDNA (punycode) form.
    assert Subscriber.objects.filter(email="anna@xn--bcher-kva.example").exists()
    assert Subscriber.objects.filter(email="latin1.reader@example.com").exists()
    messages = [str(p) for p in report.errors]
    assert any(
        m.startswith("email_list.broadside.csv, line 6:") and "non-ASCII" in m for m in messages
    )
    assert any(
        m.startswith("email_list.legacy_latin1.csv, line 3:") and "UTF-8" in m for m in messages
    )


def test_bad_rows_are_reported_with_file_and_line_and_everything_valid_imported():
    report = import_substack(path=EXPORT)
    messages = sorted(str(p) for p in report.errors)
    expected_prefixes = [
        "broadside_paid_subscribers.csv, line 6:",  # type "lifetime"
        "broadside_paid_subscribers.csv, line 7:",  # expiry "someday"
        "email_list.broadside.csv, line 6:",  # non-ASCII mailbox name
        "email_list.broadside.csv, line 7:",  # not an address
        "email_list.broadside.csv, line 8:",  # created_at not a date
        "email_list.legacy_latin1.csv, line 3:",  # not UTF-8
        "posts.csv, line 5:",  # post_date "last tuesday"
        "posts.csv, line 6:",  # posts/105.missing-body.html missing
    ]
    assert len(messages) == len(expected_prefixes) == report.rejected
    for message, prefix in zip(messages, expected_prefixes, strict=True):
        assert message.startswith(prefix), message
    assert not Article.objects.filter(external_id__in=["substack:104", "substack:105"]).exists()
    assert not Subscriber.objects.filter(email="bad.date@example.com").exists()


def test_re_running_the_import_changes_nothing():
    import_substack(path=EXPORT)
    before = snapshot()

    report = import_substack(path=EXPORT)

    assert snapshot() == before
    assert report.created == 0
    assert report.articles_created == 0
    assert report.memberships_created == 0
    assert report.articles_unchanged == 5


def test_the_command_reads_a_zip_prints_a_summary_and_exits_non_zero_on_bad_rows(tmp_path, capsys):
    archive = zipped(tmp_path)
    with pytest.raises(CommandError, match="8 row"):
        call_command("import_substack", str(archive))
    out = capsys.readouterr().out
    assert "Subscribers created: 9" in out
    assert "Articles created: 5" in out
    assert "posts.csv, line 5:" in out
    assert Article.objects.count() == 5


def test_a_zip_entry_that_tries_to_leave_the_export_is_reported_and_skipped(tmp_path):
    evil = (
        b"email,active_subscription,expiry,email_disabled,created_at\n"
        b"evil@example.com,false,,false,\n"
    )
    archive = zipped(tmp_path, {"../../etc/evil.csv": evil, "/abs/evil2.csv": evil})
    report = import_substack(path=archive)
    assert not Subscriber.objects.filter(email="evil@example.com").exists()
    unsafe = [p for p in report.errors if "unsafe path" in p.message]
    assert {p.file for p in unsafe} == {"../../etc/evil.csv", "/abs/evil2.csv"}
    assert report.created == 9


def test_an_endless_line_in_a_zipped_list_is_skipped_without_being_held_in_memory(tmp_path):
    # 12 MB of one line compresses to a few kilobytes: a zip bomb for a line reader.
    endless = b"x" * (12 * 1024 * 1024)
    listing = (
        b"email,active_subscription,expiry,email_disabled,created_at\n"
        b"before.bomb@example.com,false,,false,\n" + endless + b"\n"
        b"after.bomb@example.com,false,,false,\n"
    )
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("email_list.bomb.csv", listing)
    del endless, listing

    tracemalloc.start()
    try:
        report = import_substack(path=archive)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 4 * 1024 * 1024, peak
    assert [str(p) for p in report.errors] == [
        "email_list.bomb.csv, line 3: longer than 64 KB; skipped"
    ]
    assert set(Subscriber.objects.values_list("email", flat=True)) == {
        "before.bomb@example.com",
        "after.bomb@example.com",
    }


def test_a_damaged_archive_member_is_reported_and_the_rest_imported(tmp_path):
    archive = zipped(tmp_path)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("broadside-export/email_list.broadside.csv")
    data = bytearray(archive.read_bytes())
    # Flip a byte of that member's stored data, so its checksum no longer matches.
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 10] ^= 0xFF
    archive.write_bytes(bytes(data))

    report = import_substack(path=archive)

    damaged = [p for p in report.errors if p.file == "email_list.broadside.csv"]
    assert [p.message.split(" (")[0] for p in damaged] == ["damaged in the archive"]
    assert Subscriber.objects.filter(email="comp.reader@example.com").exists()
    assert not Subscriber.objects.filter(email="free.reader@example.com").exists()
    assert Article.objects.count() == 5


def test_a_name_column_in_a_subscriber_list_is_kept(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "email_list.named.csv").write_text(
        "email,name,active_subscription,expiry,email_disabled,created_at\n"
        "named.reader@example.com,Zoë Named,false,,false,2023-05-01\n",
        encoding="utf-8",
    )
    import_substack(path=export)
    assert Subscriber.objects.get(email="named.reader@example.com").name == "Zoë Named"


def test_a_missing_column_rejects_that_file_only(tmp_path):
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    (export / "email_list.broadside.csv").write_text("email,expiry\nsomeone@example.com,\n")
    report = import_substack(path=export)
    assert any(
        "email_list.broadside.csv" in str(p) and "missing column" in str(p) for p in report.errors
    )
    assert Subscriber.objects.filter(email="comp.reader@example.com").exists()
    assert Article.objects.count() == 5


def test_a_file_that_is_neither_zip_nor_folder_is_a_clear_error(tmp_path):
    bogus = tmp_path / "export.zip"
    bogus.write_bytes(b"this is not a zip")
    with pytest.raises(CommandError, match="not a zip archive"):
        call_command("import_substack", str(bogus))


def test_an_existing_subscriber_keeps_their_record_and_gains_the_imported_membership():
    existing = SubscriberFactory(email="comp.reader@example.com", name="Comp Reader")
    import_substack(path=EXPORT)
    existing.refresh_from_db()
    assert existing.name == "Comp Reader"
    assert existing.imported_from == ""
    assert existing.memberships.get().kind == Membership.Kind.COMP


# --- The post HTML is parsed, in one pass -------------------------------------------------


def test_unclosed_paywall_jump_divs_convert_in_time_that_grows_with_the_input():
    """4,000 unclosed `paywall-jump` divs once took 8.6 s (a pattern match, quadratic).

    No absolute time is asserted: eight times the input must take well under the 64
    times a quadratic conversion needs. bench/substack_paywall.py prints the figures.
    """

    def took(n: int) -> float:
        html = '<div class="paywall-jump">' * n + "<p>The rest.</p>"
        start = time.perf_counter()
        body = convert_post_body(html=html)
        elapsed = time.perf_counter() - start
        assert body.count(PAYWALL_MARKER) == 1
        assert "The rest." in body
        assert "paywall-jump" not in body
        return elapsed

    took(500)  # warm up
    small = min(took(1000) for _ in range(3))
    large = min(took(8000) for _ in range(3))
    assert large / small < 24, (small, large)


@pytest.mark.parametrize(
    ("html", "free", "paid"),
    [
        (
            '<p>Free.</p><div class="paywall-jump" data-component-name="PaywallToDOM"></div>'
            "<p>Paid.</p>",
            "Free.",
            "Paid.",
        ),
        (
            "<p>Free.</p><DIV CLASS='subscription-widget paywall-jump'><p>Subscribe!</p>"
            "<div>nested</div></DIV><p>Paid &amp; more.</p>"
            '<div class="paywall-jump"></div><p>Also paid.</p>',
            "Free.",
            "Paid &amp; more.",
        ),
        (
            '<p>Free <a href="/x?a=1&amp;b=2">link</a>.</p><hr class="paywall-jump"/><p>Paid.</p>',
            'Free <a href="/x?a=1&amp;b=2" rel="noopener noreferrer">link</a>.',
            "Paid.",
        ),
    ],
)
def test_the_first_paywall_jump_element_becomes_the_marker_and_the_rest_is_kept(html, free, paid):
    body = convert_post_body(html=html)
    before, after = split_at_paywall(html=body)
    assert free in before
    assert paid in after
    assert "Subscribe!" not in body and "nested" not in body
    assert "paywall-jump" not in body
    assert body.count(PAYWALL_MARKER) == 1


# --- Adopting the paid readers' Stripe subscriptions ----------------------------------


PAID_HEADER = "email,expiry,email_disabled,stripe_connected_customer_id,type\n"


def paid_export(tmp_path: Path, rows: list[tuple[str, datetime | None, str]]) -> Path:
    """An export holding only a paid subscribers list: (email, expiry, customer id)."""
    folder = tmp_path / "paid-export"
    folder.mkdir(exist_ok=True)
    lines = [
        f"{email},{expiry.isoformat() if expiry else ''},false,{customer},paid\n"
        for email, expiry, customer in rows
    ]
    (folder / "broadside_paid_subscribers.csv").write_text(PAID_HEADER + "".join(lines))
    return folder


@pytest.fixture
def membership_price(stripe_api):
    product = stripe_api.add_product(name="Broadside membership")
    return stripe_api.add_price(unit_amount=800, interval="month", product=product["id"])


def paid_on(subscriber: Subscriber, when: datetime) -> bool:
    return paid_subscribers(now=when).filter(pk=subscriber.pk).exists()


def test_a_paid_readers_live_subscription_is_adopted_and_renewals_after_the_export_expiry_keep_them_paid(  # noqa: E501
    tmp_path, stripe_api, stripe_webhooks, membership_price
):
    customer = stripe_api.add_customer(email="paid@example.com")
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=membership_price["id"], period_days=30
    )
    expiry = timezone.now() + timedelta(days=1)
    export = paid_export(tmp_path, [("paid@example.com", expiry, customer["id"])])

    report = import_substack(path=export)

    assert (report.adopted, report.comp_until_expiry, report.customers_not_found) == (1, 0, [])
    reader = Subscriber.objects.get(email="paid@example.com")
    assert reader.stripe_customer_id == customer["id"]
    membership = Membership.objects.get(subscriber=reader)
    assert membership.kind == Membership.Kind.STRIPE
    assert membership.stripe_subscription_id == subscription["id"]
    assert membership.status == Membership.Status.ACTIVE
    assert membership.cancel_at_period_end is False
    period = subscription["items"]["data"][0]
    assert membership.current_period_end == datetime.fromtimestamp(
        period["current_period_end"], tz=UTC
    )
    assert membership.imported_from == "substack:paid"
    assert membership.foreign_price is False
    plan = membership.plan
    assert plan is not None
    assert plan.stripe_price_id == membership_price["id"]
    assert (plan.amount, plan.currency, plan.interval) == (800, "usd", "month")
    assert plan.name.startswith("Broadside membership")
    assert plan.imported_from == "substack"
    assert plan not in active_plans()  # not offered on /upgrade/ until an editor says so
    assert "Broadside membership" not in Client().get("/upgrade/").content.decode()

    # A month on, Stripe renews it; the webhook keeps the reader paid past the expiry.
    invoice = stripe_api.renew_subscription(subscription["id"])
    assert stripe_webhooks.deliver("invoice.paid", invoice).status_code == 200
    membership.refresh_from_db()
    assert membership.current_period_end == datetime.fromtimestamp(
        period["current_period_end"] + 30 * 86400, tz=UTC
    )
    assert paid_on(reader, expiry + timedelta(days=20))

    # The reader cancels in Stripe: the webhook ends it.
    canceled = stripe_api.update_subscription(subscription["id"], status="canceled")
    assert stripe_webhooks.deliver("customer.subscription.deleted", canceled).status_code == 200
    assert not paid_on(reader, timezone.now())
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_trialing_and_past_due_subscriptions_are_adopted_on_a_later_page(
    tmp_path, stripe_api, membership_price
):
    customer = stripe_api.add_customer(email="long.history@example.com")
    trialing = stripe_api.add_subscription(
        customer=customer["id"], price=membership_price["id"], status="trialing"
    )
    for _ in range(100):  # a page of Stripe's list is 100; the live one is on page two
        stripe_api.add_subscription(
            customer=customer["id"], price=membership_price["id"], status="canceled"
        )
    other = stripe_api.add_customer(email="late.card@example.com")
    past_due = stripe_api.add_subscription(
        customer=other["id"], price=membership_price["id"], status="past_due"
    )
    expiry = timezone.now() + timedelta(days=3)
    export = paid_export(
        tmp_path,
        [
            ("long.history@example.com", expiry, customer["id"]),
            ("late.card@example.com", expiry, other["id"]),
        ],
    )

    report = import_substack(path=export)

    assert report.adopted == 2
    assert len(stripe_api.requests_to("GET", "/v1/subscriptions")) == 3
    statuses = dict(
        Membership.objects.filter(kind=Membership.Kind.STRIPE).values_list(
            "stripe_subscription_id", "status"
        )
    )
    assert statuses == {trialing["id"]: "trialing", past_due["id"]: "past_due"}
    assert Plan.objects.filter(imported_from="substack").count() == 1


def test_a_paid_reader_whose_subscription_ended_keeps_access_until_the_export_expiry(
    tmp_path, stripe_api, membership_price
):
    customer = stripe_api.add_customer(email="lapsed@example.com")
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=membership_price["id"]
    )
    stripe_api.update_subscription(subscription["id"], status="canceled")
    expiry = timezone.now() + timedelta(days=10)
    export = paid_export(tmp_path, [("lapsed@example.com", expiry, customer["id"])])

    report = import_substack(path=export)

    assert (report.adopted, report.subscriptions_canceled, report.comp_until_expiry) == (0, 1, 1)
    membership = Membership.objects.get(subscriber__email="lapsed@example.com")
    assert membership.kind == Membership.Kind.COMP
    assert membership.expires_at == expiry
    assert not Plan.objects.exists()
    reader = membership.subscriber
    assert paid_on(reader, timezone.now())
    assert not paid_on(reader, expiry + timedelta(minutes=1))


def test_customers_missing_from_stripe_are_reported_and_keep_access_until_the_expiry(
    tmp_path, stripe_api
):
    deleted = stripe_api.add_customer(email="deleted@example.com")
    stripe_api.delete_customer(deleted["id"])
    expiry = timezone.now() + timedelta(days=10)
    export = paid_export(
        tmp_path,
        [
            ("unknown@example.com", expiry, "cus_NeverExisted"),
            ("deleted@example.com", expiry, deleted["id"]),
        ],
    )

    report = import_substack(path=export)

    assert report.customers_not_found == ["cus_NeverExisted", deleted["id"]]
    assert report.comp_until_expiry == 2
    lines = report.summary_lines()
    assert "Stripe customers not found: 2" in lines
    assert "  not found: cus_NeverExisted" in lines
    kinds = set(Membership.objects.values_list("kind", "expires_at"))
    assert kinds == {(Membership.Kind.COMP, expiry)}


def test_running_the_import_again_adopts_nothing_twice_and_asks_stripe_nothing(
    tmp_path, stripe_api, membership_price
):
    customer = stripe_api.add_customer(email="paid@example.com")
    stripe_api.add_subscription(customer=customer["id"], price=membership_price["id"])
    expiry = timezone.now() + timedelta(days=1)
    export = paid_export(
        tmp_path,
        [("paid@example.com", expiry, customer["id"]), ("gone@example.com", expiry, "cus_Gone")],
    )
    first = import_substack(path=export)
    assert (first.adopted, first.comp_until_expiry) == (1, 1)
    before = {**snapshot(), "plans": list(Plan.objects.order_by("pk").values_list())}
    asked = len(stripe_api.requests)

    again = import_substack(path=export)

    assert (again.adopted, again.comp_until_expiry, again.memberships_created) == (0, 0, 0)
    assert again.customers_not_found == []
    assert {**snapshot(), "plans": list(Plan.objects.order_by("pk").values_list())} == before
    assert len(stripe_api.requests) == asked


def test_a_dry_run_prints_what_it_would_adopt_and_writes_nothing(
    tmp_path, stripe_api, membership_price
):
    customer = stripe_api.add_customer(email="paid@example.com")
    stripe_api.add_subscription(customer=customer["id"], price=membership_price["id"])
    expiry = timezone.now() + timedelta(days=1)
    export = paid_export(
        tmp_path,
        [("paid@example.com", expiry, customer["id"]), ("gone@example.com", expiry, "cus_Gone")],
    )
    dry, real = StringIO(), StringIO()

    progress = StringIO()
    call_command("import_substack", str(export), "--dry-run", stdout=dry, stderr=progress)
    assert progress.getvalue().splitlines() == ["Stripe lookups: 2/2"]

    assert not Subscriber.objects.exists()
    assert not Membership.objects.exists()
    assert not Plan.objects.exists()
    call_command("import_substack", str(export), stdout=real, stderr=StringIO())
    dry_lines = dry.getvalue().splitlines()
    assert dry_lines[-1] == "Dry run: nothing was written."
    assert dry_lines[:-1] == real.getvalue().splitlines()
    assert "Stripe subscriptions adopted: 1" in dry_lines
    assert "Stripe customers not found: 1" in dry_lines
    assert "Paid readers given access until the export's expiry: 1" in dry_lines
    assert Membership.objects.filter(kind=Membership.Kind.STRIPE).count() == 1


def test_sync_stripe_plans_leaves_the_imported_plans_price_and_product_alone(
    tmp_path, stripe_api, membership_price
):
    customer = stripe_api.add_customer(email="paid@example.com")
    stripe_api.add_subscription(customer=customer["id"], price=membership_price["id"])
    import_substack(path=paid_export(tmp_path, [("paid@example.com", None, customer["id"])]))
    imported = Plan.objects.get()
    PlanFactory(name="Monthly", amount=900, stripe_price_id=None)

    sync_stripe_plans()

    assert Plan.objects.get(pk=imported.pk).stripe_product_id == membership_price["product"]
    assert Plan.objects.get(pk=imported.pk).stripe_price_id == membership_price["id"]
    created = stripe_api.requests_to("POST", "/v1/prices")
    assert [r.params["unit_amount"] for r in created] == ["900"]


# --- Footnotes ------------------------------------------------------------------------


class _Links(HTMLParser):
    """The ids of a document and the href of every link, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = {name: value or "" for name, value in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "href" in values:
            self.hrefs.append(values["href"])


def links_in(markup: str) -> _Links:
    parser = _Links()
    parser.feed(markup)
    parser.close()
    return parser


def one_post_export(tmp_path: Path, *, slug: str, html: str) -> Path:
    folder = tmp_path / "post-export"
    (folder / "posts").mkdir(parents=True)
    (folder / "posts.csv").write_text(
        "post_id,post_date,is_published,type,audience,title,subtitle\n"
        f"301.{slug},2024-04-02T08:00:00.000Z,true,newsletter,everyone,Flags,Who flies what\n"
    )
    (folder / "posts" / f"301.{slug}.html").write_text(html)
    return folder


def test_a_post_with_three_footnotes_keeps_working_links_on_the_page_and_in_the_email(
    tmp_path, client, settings
):
    settings.SITE_URL = "https://broadside.example"
    markup = (EXPORT.parent / "footnotes.html").read_text()
    import_substack(path=one_post_export(tmp_path, slug="flags", html=markup))
    article = Article.objects.get(external_id="substack:301")

    page = client.get("/p/flags/")
    assert page.status_code == 200
    on_page = links_in(page.content.decode())
    fragments = [h for h in on_page.hrefs if h.startswith("#fn")]
    assert fragments == [
        *(f"#fn-{n}" for n in (1, 2, 3)),
        *(f"#fnref-{n}" for n in (1, 2, 3)),
    ]
    assert {h[1:] for h in fragments} <= on_page.ids  # every footnote link has its target
    assert "intro" not in on_page.ids  # Substack's own ids are not carried over
    free, _paid = split_at_paywall(html=article.body)
    assert "Lloyd's List" in free and "Both are public." in free
    assert "https://example.org/report" in on_page.hrefs

    email = render_article_email(article=article, segment=Delivery.Segment.FREE)
    in_email = links_in(email.html)
    page_url = "https://broadside.example/p/flags/"
    footnote_links = [h for h in in_email.hrefs if h.startswith(page_url + "#")]
    assert footnote_links == [f"{page_url}#fn-{n}" for n in (1, 2, 3)] + [
        f"{page_url}#fnref-{n}" for n in (1, 2, 3)
    ]
    assert {h.partition("#")[2] for h in footnote_links} <= on_page.ids
    assert not [h for h in in_email.hrefs if h.startswith("#")]


def test_footnote_markup_without_numbers_or_paragraphs_still_converts():
    body = convert_post_body(
        html='<p>Claim<a class="footnote-anchor" href="#footnote-4">4</a>.</p>'
        '<p>Bare<a class="footnote-anchor" href="https://example.org/">x</a></p>'
        '<div class="footnote"><a class="footnote-number" id="footnote-4" '
        'href="#footnote-anchor-4">4</a><div class="footnote-content">Just text.</div></div>'
    )
    assert '<sup><a id="fnref-4" href="#fn-4"' in body
    assert '<a href="https://example.org/" rel="noopener noreferrer">x</a>' in body
    assert '<p id="fn-4"><a href="#fnref-4" rel="noopener noreferrer">4.</a></p>' in body
    assert "Just text." in body


# --- Embeds ---------------------------------------------------------------------------


class _Frames(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, str]] = []
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = {name: value or "" for name, value in attrs}
        if tag == "iframe":
            self.frames.append(values)
        elif tag == "a":
            self.links.append(values.get("href", ""))
        elif tag == "img":
            self.images.append(values.get("src", ""))


def frames_in(markup: str) -> _Frames:
    parser = _Frames()
    parser.feed(markup)
    parser.close()
    return parser


def test_youtube_and_vimeo_embeds_are_kept_and_an_unknown_iframe_becomes_a_link(
    tmp_path, client, settings
):
    settings.SITE_URL = "https://broadside.example"
    markup = (EXPORT.parent / "embeds.html").read_text()
    report = import_substack(path=one_post_export(tmp_path, slug="interview", html=markup))

    assert (report.embeds_kept, report.embeds_linked) == (2, 2)
    assert [str(p) for p in report.warnings if p.file.startswith("posts/")] == [
        "posts/301.interview.html, line 0: embed from open.spotify.com replaced by a link to it",
        "posts/301.interview.html, line 0: an embed without a web address was removed",
    ]
    assert "Video embeds kept (YouTube, Vimeo): 2" in report.summary_lines()
    page = client.get("/p/interview/")
    on_page = frames_in(page.content.decode())
    assert [frame["src"] for frame in on_page.frames] == [
        "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
        "https://player.vimeo.com/video/76979871?dnt=1",
    ]
    assert all(
        frame.keys() == {"src", "width", "height", "allowfullscreen"} for frame in on_page.frames
    )
    assert "https://open.spotify.com/embed/episode/7makk4oTQel546B0PZlDM5" in on_page.links
    assert "srcdoc" not in page.content.decode()
    policy = dict(part.strip().split(" ", 1) for part in page["Content-Security-Policy"].split(";"))
    assert policy["frame-src"].split() == [
        "https://www.youtube-nocookie.com",
        "https://player.vimeo.com",
    ]

    article = Article.objects.get(external_id="substack:301")
    in_email = frames_in(render_article_email(article=article, segment="paid").html)
    assert in_email.frames == []
    assert "https://i.ytimg.com/vi/dQw4w9WgXcQ/hqdefault.jpg" in in_email.images
    assert "https://www.youtube.com/watch?v=dQw4w9WgXcQ" in in_email.links
    assert "https://vimeo.com/76979871" in in_email.links
    assert "https://open.spotify.com/embed/episode/7makk4oTQel546B0PZlDM5" in in_email.links


@pytest.mark.parametrize(
    "src",
    [
        "https://www.youtube.com.evil.example/embed/dQw4w9WgXcQ",
        "https://evil.example/?https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
        "javascript:alert(1)//https://player.vimeo.com/video/1",
        "https://player.vimeo.com/video/1/../../evil",
        'https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ\\"onload=alert(1)',
    ],
)
def test_an_iframe_from_anywhere_else_is_not_kept(src):
    body = convert_post_body(html=f'<iframe src="{src}"></iframe>')
    assert "<iframe" not in body


# --- Pictures -------------------------------------------------------------------------


def png_bytes() -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (4, 3), "navy").save(buffer, "PNG")
    return buffer.getvalue()


class ImageHost(LocalHTTPServer):
    """A picture host: `files` by path, with their content type; a 404 for the rest."""

    thread_name = "image-host"

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        self.files = files
        self.requested: list[str] = []

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requested.append(self.path)
                if self.path not in host.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                content_type, data = host.files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):
                pass

        return Handler


@pytest.fixture
def image_host(settings):
    settings.IMPORT_MEDIA_ALLOW_PRIVATE = True
    with ImageHost(
        {
            "/images/strait.png": ("image/png", png_bytes()),
            "/images/page.html": ("image/png", b"<html>not a picture</html>"),
        }
    ) as host:
        yield host


class _Unreadable:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("not a readable image")


ANY_UNREADABLE = _Unreadable()


def picture_post(url: str) -> str:
    return (
        '<div class="captioned-image-container"><figure><a class="image-link" '
        f'href="{url}/images/strait.png"><img src="{url}/images/strait.png" '
        'alt="Tankers at anchor" width="1456"></a>'
        '<figcaption class="image-caption">Tankers off the strait.</figcaption></figure></div>'
        f'<p>Then:</p><img src="{url}/images/missing.png" alt="Gone">'
        f'<img src="{url}/images/page.html" alt="Not one"><img src="{url}/images/strait.png">'
    )


def test_pictures_are_downloaded_rewritten_and_counted_and_a_missing_one_reported(
    tmp_path, settings, image_host
):
    export = one_post_export(tmp_path, slug="pictures", html=picture_post(image_host.url))

    report = import_substack(path=export)

    assert (report.images_downloaded, report.images_failed) == (1, 2)
    failures = [p.message for p in report.warnings if p.file == "posts/301.pictures.html"]
    assert [f.split(": ", 1) for f in failures] == [
        [f"picture {image_host.url}/images/missing.png kept where it is", "answered HTTP 404"],
        [f"picture {image_host.url}/images/page.html kept where it is", ANY_UNREADABLE],
    ]
    body = Article.objects.get(external_id="substack:301").body
    frames = frames_in(body)
    local = [src for src in frames.images if src.startswith("/media/substack/")]
    assert len(local) == 2 and local[0] == local[1] and local[0].endswith(".png")
    assert frames.links[0] == local[0]  # the full-size link follows the picture
    stored = Path(settings.MEDIA_ROOT) / local[0].removeprefix("/media/")
    assert stored.read_bytes() == png_bytes()
    assert f'src="{image_host.url}/images/missing.png"' in body
    assert 'alt="Tankers at anchor"' in body and 'alt="Gone"' in body
    assert "<figcaption>Tankers off the strait.</figcaption>" in body
    assert image_host.requested.count("/images/strait.png") == 1

    # Imported again (the article deleted meanwhile): nothing is downloaded twice.
    Article.objects.all().delete()
    image_host.requested.clear()
    again = import_substack(path=export)
    assert again.images_already_copied == 1
    assert "/images/strait.png" not in image_host.requested


def test_pictures_on_private_or_loopback_hosts_are_refused_by_default(tmp_path, settings):
    settings.IMPORT_MEDIA_ALLOW_PRIVATE = False
    with ImageHost({"/images/strait.png": ("image/png", png_bytes())}) as host:
        export = one_post_export(tmp_path, slug="pictures", html=picture_post(host.url))
        report = import_substack(path=export)
        assert host.requested == []
        url = host.url
    assert report.images_downloaded == 0
    assert any("private or local address (127.0.0.1)" in p.message for p in report.warnings)
    body = Article.objects.get(external_id="substack:301").body
    assert f'src="{url}/images/strait.png"' in body


def test_substack_status_summarises_readers_paid_adopted_and_granted(
    tmp_path, stripe_api, membership_price
):
    customer = stripe_api.add_customer(email="paid@example.com")
    stripe_api.add_subscription(customer=customer["id"], price=membership_price["id"])
    expiry = datetime(2031, 5, 6, tzinfo=UTC)
    import_substack(
        path=paid_export(
            tmp_path,
            [("paid@example.com", expiry, customer["id"]), ("gone@example.com", expiry, "cus_X")],
        )
    )
    out = StringIO()

    call_command("substack_status", stdout=out)

    assert out.getvalue().splitlines() == [
        "Readers imported from Substack: 2",
        "  active: 2",
        "Paid now: 2",
        "Adopted Stripe memberships: 1",
        "  active: 1",
        "  on a price no plan knows (no access): 0",
        "Comp and gift memberships running: 1",
        "  expiring from 2031-05-06 to 2031-05-06",
    ]
