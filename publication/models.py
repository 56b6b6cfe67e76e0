"""The publication itself: its name, its sender, its links (one row, pk=1).

The bottom layer: every other app reads it, it reads none of them. The comment
settings are the editors' choices for the whole publication, read by `newsletter`.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from publication.validators import validate_image_upload


class Publication(models.Model):
    """The one publication this site serves (a singleton, pk=1)."""

    class CommentPolicy(models.TextChoices):
        SIGNED_IN = "signed_in", "Everyone signed in"
        PAID = "paid", "Paid readers only"

    name = models.CharField(max_length=200, default="Broadside")
    tagline = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    logo = models.ImageField(
        upload_to="publication/", blank=True, validators=[validate_image_upload]
    )
    sender_name = models.CharField(max_length=200, blank=True)
    sender_email = models.EmailField(blank=True)
    reply_to_email = models.EmailField(blank=True)
    kofi_url = models.URLField("Ko-fi link", blank=True)
    buymeacoffee_url = models.URLField("Buy Me a Coffee link", blank=True)
    telegram_channel_url = models.URLField("Telegram channel link", blank=True)
    footer_text = models.TextField(
        blank=True, help_text="Shown in the site and email footer (e.g. a postal address)."
    )
    comment_policy = models.CharField(
        max_length=20, choices=CommentPolicy.choices, default=CommentPolicy.SIGNED_IN
    )
    comment_digest_enabled = models.BooleanField(
        "email authors a digest of new comments",
        default=False,
        help_text="Each article's authors get one email an hour listing its new comments.",
    )
    # db_default as well: the previous release, still running while the migration is
    # applied, writes rows without this column.
    track_engagement = models.BooleanField(
        "count opens and clicks",
        default=True,
        db_default=True,
        help_text=(
            "Emails carry an open pixel and links through this site, so each article's page "
            "shows how many readers opened it and what they clicked (machines counted apart). "
            "Off: emails carry neither."
        ),
    )
    show_founding_badges = models.BooleanField(
        "mark founding members' comments",
        default=False,
        help_text="Comments by readers on a founding plan carry a 'Founding member' badge.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The table the model had in `newsletter`, kept on purpose: a deploy migrates
        # before the old processes restart, and they go on reading this table meanwhile
        # (renaming it would fail every one of their requests until then).
        db_table = "newsletter_publication"
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="publication_singleton")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def load(cls) -> Publication:
        publication, _ = cls.objects.get_or_create(pk=1)
        return publication
