"""Small helpers the browser journeys share."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import Site


def link_in(text: str, site: Site, path_prefix: str) -> str:
    """The first link in an email to this site whose path starts with `path_prefix`."""
    pattern = re.escape(site.url + path_prefix) + r"[^\s<>\"']+"
    match = re.search(pattern, text)
    assert match, f"no link to {path_prefix} in:\n{text}"
    return match.group(0)


def pay_on_checkout(page: Page, site: Site, *, amount: str) -> None:
    """On Stripe's (stand-in) Checkout page, at the session's own URL: check the amount
    shown ("8.00 USD") and pay, which delivers the signed webhooks and redirects back."""
    page.wait_for_url(f"{site.stripe.url}/pay/**")
    expect(page.get_by_role("heading", name=f"Pay {amount}")).to_be_visible()
    page.get_by_role("button", name="Pay").click()
