"""What an import did: the counts and lists its summary prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from subscriptions.services.imports import (
    ImportReport,
)

SOURCE = "substack"

MAX_LISTED = 1000


@dataclass
class SubstackReport(ImportReport):
    """An import's counts, with what became of the paid readers' Stripe subscriptions."""

    adopted: int = 0  # Stripe subscriptions now mirrored as memberships
    comp_until_expiry: int = 0  # paid readers granted access until the export's expiry
    customers_not_found: list[str] = field(default_factory=list)
    subscriptions_canceled: int = 0  # paid readers whose subscriptions had all ended
    plans_created: list[str] = field(default_factory=list)
    stripe_lookups: int = 0
    embeds_kept: int = 0  # YouTube and Vimeo players, as privacy-enhanced embeds
    embeds_linked: int = 0  # other embeds, now links (each listed as a warning)
    images_downloaded: int = 0
    images_already_copied: int = 0
    images_failed: int = 0  # each listed as a warning with its post
    image_copies: dict[str, str] = field(default_factory=dict)  # address -> local URL
    dry_run: bool = False

    def summary_lines(self) -> list[str]:
        lines = super().summary_lines()
        if self.images_downloaded or self.images_already_copied or self.images_failed:
            lines += [
                f"Pictures downloaded: {self.images_downloaded}",
                f"Pictures already downloaded: {self.images_already_copied}",
                f"Pictures that could not be downloaded (kept where they are): "
                f"{self.images_failed}",
            ]
        if self.embeds_kept or self.embeds_linked:
            lines += [
                f"Video embeds kept (YouTube, Vimeo): {self.embeds_kept}",
                f"Other embeds replaced by a link: {self.embeds_linked}",
            ]
        if self.stripe_lookups or self.adopted or self.comp_until_expiry:
            lines += [
                f"Stripe customers looked up: {self.stripe_lookups}",
                f"Stripe subscriptions adopted: {self.adopted}",
                f"Paid readers with every subscription ended: {self.subscriptions_canceled}",
                f"Stripe customers not found: {len(self.customers_not_found)}",
                *(f"  not found: {c}" for c in self.customers_not_found[:MAX_LISTED]),
                f"Paid readers given access until the export's expiry: {self.comp_until_expiry}",
            ]
            lines += [f"Plan created (not offered on /upgrade/): {p}" for p in self.plans_created]
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        return lines


@dataclass(frozen=True)
class PendingPaidReader:
    """A paid reader whose Stripe customer is looked up once the lists are in."""

    subscriber_id: int
    customer_id: str
    expires_at: datetime | None
