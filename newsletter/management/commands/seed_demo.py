"""manage.py seed_demo: a demo publication to click through. Idempotent; emails nobody.

Published demo articles are written as already-published rows (an archive), not put
through publish_article, so seeding never creates an email send or a Telegram post.
"""

from __future__ import annotations

import io
import math
import random
import textwrap
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from PIL import Image, ImageDraw, ImageFont

from newsletter.models import Article, Author, Section
from newsletter.services.content import PAYWALL_MARKER, sanitize_body
from publication.models import Publication
from subscriptions.models import Plan


@dataclass(frozen=True)
class DemoArticle:
    slug: str
    title: str
    subtitle: str
    section: str
    authors: tuple[str, ...]
    body: str
    visibility: str = Article.Visibility.PUBLIC
    status: str = Article.Status.PUBLISHED
    days_ago: float = 0
    caption: str = ""
    palette: tuple[str, str] = ("#1f3a5f", "#9b2c1f")


PUBLICATION = {
    "name": "The Meridian Letter",
    "tagline": "Independent analysis of geopolitics, energy and power",
    "description": (
        "A weekly letter on the forces that move the world: chokepoints and pipelines, "
        "sanctions and ceasefires, budgets and ballots. Free to read, with deeper "
        "scenarios for paid subscribers."
    ),
    "sender_name": "The Meridian Letter",
    "sender_email": "letters@meridian.example",
    "reply_to_email": "editor@meridian.example",
    "kofi_url": "https://ko-fi.com/meridianletter",
    "buymeacoffee_url": "https://www.buymeacoffee.com/meridianletter",
    "telegram_channel_url": "https://t.me/meridianletter",
    "footer_text": "The Meridian Letter · 12 Harbour Street, Lisbon, Portugal",
}

AUTHORS = {
    "mara-ellison": {
        "display_name": "Mara Ellison",
        "bio": (
            "Editor. Covered European energy and the Black Sea for a decade before "
            "starting this letter."
        ),
    },
    "tomasz-wren": {
        "display_name": "Tomasz Wren",
        "bio": "Contributing analyst on trade, shipping and sanctions enforcement.",
    },
}

SECTIONS = {
    "global-geopolitics": ("Global geopolitics", "Power, alliances and the wars that test them."),
    "energy-and-trade": ("Energy & trade", "Pipelines, ports, prices and the routes between."),
    "briefings": ("Briefings", "Short weekly notes on what to watch."),
}

ARTICLES = [
    DemoArticle(
        slug="welcome-to-the-meridian-letter",
        title="Welcome to The Meridian Letter",
        subtitle="What this letter is for, and what it will never do",
        section="briefings",
        authors=("mara-ellison",),
        days_ago=40,
        caption="The harbour at dawn, where the first issue was written.",
        palette=("#24485f", "#d9a441"),
        body="""
<p>Most news about the world arrives as weather: a storm here, a front there, nothing
connecting them. This letter tries to do the opposite. Each week we pick one force that
is quietly shaping events, and follow it from the map to the money to the people who
decide.</p>
<h2>What you can expect</h2>
<ul><li>One long analysis a week, free to read in full or in part.</li>
<li>A short briefing on what to watch in the days ahead.</li>
<li>For paid subscribers, the scenarios: what happens next, with the odds we would put
on each.</li></ul>
<p>We will never sell your address, and we will never send you anything you did not
sign up for. If you find the work useful, a paid subscription or a coffee keeps it
independent.</p>
""",
    ),
    DemoArticle(
        slug="the-strait-is-the-story",
        title="The Strait Is the Story",
        subtitle="Why a few narrow waterways decide the price of almost everything",
        section="energy-and-trade",
        authors=("mara-ellison",),
        days_ago=33,
        caption="Tankers queue at anchor outside a congested strait.",
        palette=("#0f3b57", "#e07a3f"),
        body="""
<p>Look at a shipping map long enough and the world stops looking like continents. It
looks like a handful of gates. A fifth of the oil traded by sea passes through one of
them; a tenth of all seaborne trade squeezes through another. When a gate narrows, the
whole economy feels it within weeks.</p>
<h2>Insurance moves first</h2>
<p>The first sign of trouble is rarely a closure. It is a war-risk premium. Underwriters
in London reprice a voyage overnight, owners reroute, and the longer route adds ten or
twelve days and a great deal of fuel. Nothing has been blockaded, and yet the cost of
moving goods has already risen.</p>
<blockquote><p>A chokepoint does not need to close to do damage. It only needs to look
like it might.</p></blockquote>
<h2>Who gains from the detour</h2>
<p>Longer routes tie up more ships for longer, which tightens the charter market and
rewards the owners who kept capacity in reserve. Ports along the detour see a windfall.
Importers at the end of the line, with thin margins and no alternative supplier, carry
the cost.</p>
<p>That is why the strait is the story: watch the premiums and the charter rates, and
you will see a crisis coming before the headlines do.</p>
""",
    ),
    DemoArticle(
        slug="why-sanctions-leak",
        title="Why Sanctions Leak",
        subtitle="The shadow fleet, the middlemen, and the limits of financial pressure",
        section="global-geopolitics",
        authors=("tomasz-wren",),
        visibility=Article.Visibility.PAID,
        days_ago=26,
        caption="An ageing tanker loading at night, its transponder switched off.",
        palette=("#2b2d42", "#c0392b"),
        body=f"""
<p>Sanctions are announced as walls and enforced as sieves. Every package of measures
starts with a clear line, and within months a parallel trade has grown up around it:
older ships under new flags, traders registered last spring, payments routed through
banks too small to fear losing access to the dollar.</p>
<p>None of this means sanctions fail. It means their effect is a discount, not a stop.
The sanctioned seller still sells, but for less, and pays more to do it. The question
for policy is how wide that discount can be pushed, and at what cost to everyone
else.</p>
{PAYWALL_MARKER}
<h2>Three ways the discount narrows</h2>
<p>First, the shadow fleet grows until it stops being scarce: every additional tanker
bought second-hand lowers the premium a sanctioned cargo pays. Second, enforcement
fatigue sets in as agencies run out of staff to trace each sale. Third, buyers learn
that the penalties for taking the cargo are rarely applied to them.</p>
<h2>Our scenarios for the next year</h2>
<p>Our central case, at roughly sixty per cent, is a slow erosion: the discount halves
as the fleet expands and attention moves elsewhere. A tougher case, at thirty per cent,
follows a coordinated push on insurers and flag registries that widens it again. The
remaining tail is a negotiated easing tied to a ceasefire.</p>
<p>What would change our mind: a major port state refusing entry to uninsured
tankers, or a large bank being made an example of.</p>
""",
    ),
    DemoArticle(
        slug="five-things-to-watch-this-week",
        title="Five Things to Watch This Week",
        subtitle="Budgets, a summit, a shipping index and two elections",
        section="briefings",
        authors=("mara-ellison", "tomasz-wren"),
        days_ago=19,
        caption="A week on the calendar, annotated.",
        palette=("#3d5a40", "#f2c14e"),
        body="""
<ol>
<li><strong>The summit communiqué.</strong> Read the paragraph on maritime security
before the one on trade; it will say more.</li>
<li><strong>Freight rates.</strong> The container index has risen three weeks running.
A fourth rise would confirm that the detours are here to stay.</li>
<li><strong>A budget vote.</strong> Defence spending is the line to watch, not the
headline deficit.</li>
<li><strong>Two elections.</strong> Both are close; in both, the energy price is the
issue voters name first.</li>
<li><strong>Central bank minutes.</strong> Look for the word “supply” near the word
“persistent”.</li>
</ol>
<p>We will follow up on each next week.</p>
""",
    ),
    DemoArticle(
        slug="the-grain-corridors-quiet-arithmetic",
        title="The Grain Corridor's Quiet Arithmetic",
        subtitle="How much gets through, who pays for the risk, and why it matters far away",
        section="energy-and-trade",
        authors=("tomasz-wren",),
        visibility=Article.Visibility.SUBSCRIBERS,
        days_ago=12,
        caption="Grain terminals on a calm morning.",
        palette=("#6b4f2a", "#e9c46a"),
        body=f"""
<p>A corridor is a promise, and promises are priced. Each ship that sails through a
contested sea carries a cargo, a crew, and an insurance policy written on the
assumption that the promise holds.</p>
<p>The volumes tell the story better than the speeches: when the corridor works,
exports climb back towards their pre-war level within a season, and bread prices in
importing countries follow them down.</p>
{PAYWALL_MARKER}
<h2>The numbers behind the numbers</h2>
<p>Roughly two thirds of the cost of a voyage through the corridor is now insurance and
delay, not fuel. A single incident adds a week of hesitation across the whole fleet.
That is why the corridor's real capacity is set less by ports than by confidence.</p>
<p>Importers in North Africa and the Middle East are the quiet stakeholders: a
sustained corridor is worth more to their food budgets than most aid packages.</p>
""",
    ),
    DemoArticle(
        slug="ports-not-bases",
        title="Ports, Not Bases",
        subtitle="Influence now travels through cranes, customs codes and long leases",
        section="global-geopolitics",
        authors=("mara-ellison",),
        days_ago=6,
        caption="Gantry cranes over a newly built container terminal.",
        palette=("#1b4965", "#5fa8d3"),
        body="""
<p>The last century measured reach in military bases. This one measures it in
terminals. A forty-year concession to run a port gives its operator data on every
container, a say in which shipping lines call, and a relationship with the host
government that outlasts any single election.</p>
<h2>Why governments say yes</h2>
<p>Because the alternative is often no port at all. Building a deep-water terminal
costs more than many treasuries can borrow, and the lender who arrives with cranes and
a construction crew tends to win.</p>
<h2>What to watch</h2>
<p>Lease terms, not ribbon-cuttings. The clauses on security access, dispute
resolution and renegotiation tell you who will really be in charge in twenty
years.</p>
""",
    ),
    DemoArticle(
        slug="what-a-ceasefire-needs-to-hold",
        title="What a Ceasefire Needs to Hold",
        subtitle="Lines on a map are the easy part",
        section="global-geopolitics",
        authors=("mara-ellison", "tomasz-wren"),
        visibility=Article.Visibility.PAID,
        days_ago=2,
        caption="Observers walk a line of concrete barriers.",
        palette=("#3a0ca3", "#f72585"),
        body=f"""
<p>Most ceasefires break not over the line itself but over what happens near it: a
patrol that strays, a village that wants its fields back, a commander who was not told.
Agreements that last tend to share a few unglamorous features.</p>
<p>They name who monitors, they say what happens after a violation, and they give both
sides something to lose by walking away.</p>
{PAYWALL_MARKER}
<h2>The checklist we use</h2>
<ul><li>A monitoring body with access on both sides and the means to publish what it
sees.</li><li>A hotline between commanders, tested weekly, not only in a crisis.</li>
<li>Sequenced rewards: sanctions relief or reconstruction money released in steps, each
tied to verified compliance.</li></ul>
<h2>Scoring the current talks</h2>
<p>On our checklist the current draft scores two of five. Monitoring is agreed in
principle but unfunded; there is no sequence for relief. Our estimate is a forty per
cent chance that a signed text holds for a year.</p>
""",
    ),
    DemoArticle(
        slug="reading-the-budget-season",
        title="Reading the Budget Season",
        subtitle="Where defence, energy subsidies and debt collide",
        section="briefings",
        authors=("tomasz-wren",),
        status=Article.Status.SCHEDULED,
        days_ago=-2,
        caption="Budget documents, stacked and flagged.",
        palette=("#264653", "#2a9d8f"),
        body="""
<p>Budget season is when strategy meets arithmetic. This week we read three budgets
side by side and ask one question of each: what did they choose not to fund?</p>
<p>The answers say more about priorities than any speech.</p>
""",
    ),
    DemoArticle(
        slug="notes-on-arctic-shipping",
        title="Notes on Arctic Shipping",
        subtitle="Draft: shorter routes, thinner ice, thicker politics",
        section="energy-and-trade",
        authors=("mara-ellison",),
        status=Article.Status.DRAFT,
        caption="Sea ice breaking up along a northern route.",
        palette=("#4a6fa5", "#e0fbfc"),
        body="""
<p>Working notes. The northern route saves up to a third of the distance between East
Asia and Northern Europe in the summer months, but insurance, escort fees and a short
season eat most of the saving.</p>
<p>To do: compare escort fees across the last three seasons.</p>
""",
    ),
]


def cover_image(*, title: str, kicker: str, palette: tuple[str, str], seed: str) -> bytes:
    """A 1600x900 cover drawn locally: a gradient, meridian lines, the title."""
    width, height = 1600, 900
    top = Image.new("RGB", (1, 2))
    top.putpixel((0, 0), _rgb(palette[0]))
    top.putpixel((0, 1), _rgb(palette[1]))
    image = top.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image, "RGBA")
    rng = random.Random(seed)  # the same cover every time for the same article
    centre_x, centre_y = rng.randint(900, 1400), rng.randint(200, 700)
    for radius in range(120, 1400, 110):
        draw.ellipse(
            (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius),
            outline=(255, 255, 255, 38),
            width=3,
        )
    for step in range(12):
        angle = math.pi * step / 12
        dx, dy = math.cos(angle) * 1800, math.sin(angle) * 1800
        draw.line(
            (centre_x - dx, centre_y - dy, centre_x + dx, centre_y + dy),
            fill=(255, 255, 255, 28),
            width=2,
        )
    draw.rectangle((0, height - 330, width, height), fill=(0, 0, 0, 110))
    small = ImageFont.load_default(size=34)
    large = ImageFont.load_default(size=76)
    draw.text((80, height - 300), kicker.upper(), font=small, fill=(255, 255, 255, 220))
    for line_number, line in enumerate(textwrap.wrap(title, width=34)[:3]):
        draw.text((80, height - 245 + line_number * 84), line, font=large, fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=82, optimize=True)
    return buffer.getvalue()


def _rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


PLANS = [
    {
        "name": "Monthly",
        "description": "Every article in full, and the archive.",
        "interval": "month",
        "amount": 800,
        "currency": "usd",
        "position": 0,
    },
    {
        "name": "Yearly",
        "description": "Two months free, and the same full access.",
        "interval": "year",
        "amount": 8000,
        "currency": "usd",
        "position": 1,
    },
]


class Command(BaseCommand):
    help = (
        "Create a demo publication: two authors, three sections, articles (free, paid, "
        "scheduled, draft) with generated covers. Safe to run again; sends nothing."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        publication = Publication.load()
        if not publication.tagline:
            for name, value in PUBLICATION.items():
                setattr(publication, name, value)
            publication.save()

        authors = {
            slug: Author.objects.get_or_create(slug=slug, defaults=fields)[0]
            for slug, fields in AUTHORS.items()
        }
        sections = {
            slug: Section.objects.get_or_create(
                slug=slug, defaults={"name": name, "description": description, "position": i}
            )[0]
            for i, (slug, (name, description)) in enumerate(SECTIONS.items())
        }

        # Two plans, so the demo shows the upgrade page; without Stripe they are listed
        # unpriced, and `sync_stripe_plans` gives them prices once Stripe is set up.
        plans = 0
        if not Plan.objects.exists():
            Plan.objects.bulk_create(Plan(**fields) for fields in PLANS)
            plans = len(PLANS)

        created = 0
        now = timezone.now()
        for demo in ARTICLES:
            if Article.objects.filter(slug=demo.slug).exists():
                continue
            when = now - timedelta(days=demo.days_ago)
            article = Article(
                slug=demo.slug,
                title=demo.title,
                subtitle=demo.subtitle,
                body=sanitize_body(html=" ".join(demo.body.split())),
                section=sections[demo.section],
                visibility=demo.visibility,
                status=demo.status,
                cover_caption=demo.caption,
                published_at=when if demo.status == Article.Status.PUBLISHED else None,
                publish_at=when if demo.status == Article.Status.SCHEDULED else None,
                email_audience=Article.EmailAudience.EVERYONE,
            )
            cover = cover_image(
                title=demo.title,
                kicker=sections[demo.section].name,
                palette=demo.palette,
                seed=demo.slug,
            )
            article.cover_image.save(f"{demo.slug}.jpg", ContentFile(cover), save=False)
            article.save()
            article.authors.set([authors[slug] for slug in demo.authors])
            created += 1

        self.stdout.write(
            self.style.SUCCESS(
                f"Demo publication {publication.name!r}: {created} article(s) created, "
                f"{len(ARTICLES) - created} already there"
                + (f"; {plans} paid plan(s) created." if plans else ".")
            )
        )
