"""Import from a Substack export (ARCHITECTURE.md flow 9)."""

from __future__ import annotations

import shutil
import time
import tracemalloc
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from newsletter.models import Article, EmailSend, TelegramPost
from newsletter.services.content import PAYWALL_MARKER, split_at_paywall
from subscriptions.models import Membership, Subscriber
from subscriptions.services.access import subscriber_is_paid
from subscriptions.services.substack import convert_post_body, import_substack
from tests.factories import ArticleFactory, SubscriberFactory

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
    import_substack(path=EXPORT)
    body = Article.objects.get(external_id="substack:101").body
    assert 'src="https://substack-post-media.s3.amazonaws.com/public/images/strait.jpeg"' in body
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
