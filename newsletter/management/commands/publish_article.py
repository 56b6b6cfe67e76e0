"""manage.py publish_article <slug>: publish now, exactly as the admin's button does."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from newsletter.models import Article
from newsletter.services.publishing import PublishError, publish_article


class Command(BaseCommand):
    help = "Publish an article now (and send it by email and to Telegram, as configured)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The article's slug, as in /p/<slug>/.")
        parser.add_argument(
            "--no-email",
            action="store_true",
            help="Publish on the site without emailing subscribers.",
        )

    def handle(self, *args: Any, slug: str, no_email: bool, **options: Any) -> None:
        try:
            article = Article.objects.get(slug=slug)
        except Article.DoesNotExist as exc:
            raise CommandError(f"No article with the slug {slug!r}.") from exc
        try:
            result = publish_article(article=article, send_email=not no_email)
        except PublishError as exc:
            raise CommandError(str(exc)) from exc
        if not result.newly_published:
            self.stdout.write(f"{article.title!r} was already published; nothing was sent.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Published {article.title!r} at {result.article.published_at:%Y-%m-%d %H:%M} UTC."
            )
        )
        if result.email_send is not None:
            count = result.email_send.recipient_count
            self.stdout.write(f"Email send queued for {count} reader{'' if count == 1 else 's'}.")
