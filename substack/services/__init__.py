"""Import a Substack export (a .zip or its unpacked folder), ARCHITECTURE.md flow 9.

What comes across:
- `posts.csv` + `posts/<post_id>.html`: published posts are archived as published
  articles without being emailed or posted again (never through `publish_article`);
  unpublished ones become drafts with the defaults of a new article. The
  `paywall-jump` element becomes the paywall marker; pictures are copied into the
  media storage (`media_download`) and the post points at the copies, captions and
  alt text kept (one that fails is reported and keeps its address); footnotes and
  YouTube/Vimeo embeds are kept, other embeds become links.
- The subscriber lists, in either of Substack's two layouts:
  `email, active_subscription, expiry, email_disabled, created_at` and
  `email, expiry, email_disabled, stripe_connected_customer_id, type`.
  `email_disabled` readers are imported unsubscribed (never emailed) but can still
  sign in and read what they paid for.

Memberships. Substack keeps a writer's paid subscriptions in the writer's own Stripe
account, so when Stripe is configured (the same account) each paid reader's customer
(`stripe_connected_customer_id`) is looked up there and every live subscription
(active, trialing, past_due) is adopted: recorded as a Stripe membership through
`sync_membership_from_stripe`, as a webhook would, with a Plan for its price made from
the price and its product (`imported_from` set, not offered on /upgrade/). From then on
the ordinary webhooks keep it true. Lookups run one reader at a time outside the
batch transactions, paced under Stripe's rate limits.

Readers with no live subscription (none, all ended, the customer unknown, or Stripe not
configured), and comp and gift readers, get a membership that grants access until the
export's `expiry` (none: no end): kind GIFT for gifts and COMP otherwise,
`imported_from` `substack:<type>`. Everything is keyed (article `external_id`
`substack:<post number>`, subscriber address, imported memberships per subscriber), so
running the import again changes nothing and asks Stripe nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.db import transaction

from newsletter.services.page_cache import invalidate_pages
from substack.services.archive import open_export
from substack.services.markup import convert_post, convert_post_body
from substack.services.posts import import_posts
from substack.services.readers import (
    PAID_FORMAT,
    _import_subscriber_file,
    _subscriber_lists,
)
from substack.services.report import PendingPaidReader, SubstackReport
from substack.services.status import import_status_lines
from substack.services.stripe_adoption import adopt_stripe_subscriptions


class _DryRun(Exception):
    """Raised to roll a dry run back."""


def import_substack(
    *,
    path: Path,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SubstackReport:
    """Import posts and subscribers from a Substack export. Raises ImportFileError.

    `dry_run` does everything (Stripe is only read) and rolls it back, so the report
    says what a real run would do. `progress(stage, done, total)` is told how far the
    posts (with the pictures they download) and the Stripe lookups are.
    """
    report = SubstackReport(dry_run=dry_run)
    if not dry_run:
        _import_all(path=path, report=report, progress=progress)
        return report
    try:
        with transaction.atomic():
            _import_all(path=path, report=report, progress=progress)
            raise _DryRun
    except _DryRun:
        pass
    return report


def _import_all(
    *, path: Path, report: SubstackReport, progress: Callable[[str, int, int], None] | None
) -> None:
    pending: list[PendingPaidReader] = []
    with open_export(path=path, report=report) as export:
        if "posts.csv" in export:
            import_posts(export=export, report=report, progress=progress)
        else:
            report.warn(file="posts.csv", line=0, message="not in the export; no posts imported")
        lists = _subscriber_lists(export=export, report=report)
        for name, layout in sorted(lists, key=lambda item: (item[1] != PAID_FORMAT, item[0])):
            _import_subscriber_file(
                export=export, name=name, layout=layout, report=report, pending=pending
            )
    adopt_stripe_subscriptions(readers=pending, report=report, progress=progress)
    # Bulk inserts send no signals: a new page-cache generation shows what was imported
    # (articles, and readers' memberships) at once rather than when old copies expire.
    invalidate_pages()


__all__ = [
    "SubstackReport",
    "adopt_stripe_subscriptions",
    "convert_post",
    "convert_post_body",
    "import_status_lines",
    "import_substack",
]
