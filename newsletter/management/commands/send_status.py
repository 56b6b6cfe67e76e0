"""manage.py send_status <slug>: the email send's progress, as the admin shows it."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from newsletter.models import EmailSend
from newsletter.services.engagement import ArticleEngagement, article_engagement
from newsletter.services.sending import SendProgress, send_progress

LIVE = {EmailSend.Status.QUEUED, EmailSend.Status.SENDING, EmailSend.Status.PAUSED}


class Command(BaseCommand):
    help = "Print the progress of an article's email send (pending, sent, failed, rate)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The article's slug, as in /p/<slug>/.")
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="Print again every SECONDS until the send is finished.",
        )

    def handle(self, *args: Any, slug: str, watch: float | None, **options: Any) -> None:
        email_send = EmailSend.objects.select_related("article").filter(article__slug=slug).first()
        if email_send is None:
            raise CommandError(f"The article {slug!r} has no email send (not published by email?).")
        while True:
            progress = send_progress(email_send=email_send)
            self.stdout.write(self.render(progress))
            self.stdout.write(
                self.render_engagement(article_engagement(article=email_send.article))
            )
            if not watch or progress.status not in LIVE:
                return
            time.sleep(watch)
            self.stdout.write("")

    @staticmethod
    def render_engagement(figures: ArticleEngagement) -> str:
        """Readers (people), with what machines did beside: proxies, prefetches, scanners."""

        def rate(value: float | None) -> str:
            return f" ({value:.0%})" if value is not None else ""

        lines = [
            f"  opened: {figures.opened_readers} readers{rate(figures.open_rate)}, "
            f"machines: {figures.machine_opens}",
            f"  clicked: {figures.clicked_readers} readers{rate(figures.click_rate)}, "
            f"machines: {figures.machine_clicks}",
        ]
        lines.extend(
            f"    {link.url}: {link.readers} readers, {link.human_clicks} clicks, "
            f"machines: {link.machine_clicks}"
            for link in figures.links
        )
        return "\n".join(lines)

    @staticmethod
    def render(progress: SendProgress) -> str:
        lines = [
            f"{progress.article_title}: {progress.status}, {progress.percent:.1f}% done",
            f"  recipients {progress.recipients}  pending {progress.pending}  "
            f"in flight {progress.claimed}  sent {progress.sent}  failed {progress.failed}  "
            f"skipped {progress.skipped}",
            f"  rate {progress.rate_per_minute:.0f}/min",
        ]
        if progress.started_at:
            lines.append(f"  started {progress.started_at:%Y-%m-%d %H:%M:%S} UTC")
        if progress.finished_at:
            lines.append(f"  finished {progress.finished_at:%Y-%m-%d %H:%M:%S} UTC")
        if progress.recent_errors:
            lines.append("  recent errors:")
            lines.extend(f"    {email}: {error}" for email, error in progress.recent_errors)
        return "\n".join(lines)
