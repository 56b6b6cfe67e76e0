"""Content and its distribution: articles, authors, sections, comments, sends, posts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThan, LessThanOrEqual
from django.urls import reverse

from publication.validators import validate_image_upload


class Author(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    display_name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    bio = models.TextField(blank=True)
    avatar = models.ImageField(upload_to="authors/", blank=True, validators=[validate_image_upload])

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name

    def get_absolute_url(self) -> str:
        return reverse("newsletter:author", kwargs={"slug": self.slug})


class Section(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    description = models.TextField(blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("newsletter:section", kwargs={"slug": self.slug})


class Article(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        PUBLISHED = "published", "Published"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Everyone"
        SUBSCRIBERS = "subscribers", "Subscribers (signed in)"
        PAID = "paid", "Paid subscribers"

    class EmailAudience(models.TextChoices):
        EVERYONE = "everyone", "Every subscriber (free readers get the free part)"
        PAID = "paid", "Paid subscribers only"
        NOBODY = "nobody", "Nobody (publish without email)"

    title = models.CharField(max_length=300)
    slug = models.SlugField(max_length=200, unique=True)
    subtitle = models.CharField(max_length=500, blank=True)
    body = models.TextField(blank=True, help_text="Sanitised HTML.")
    cover_image = models.ImageField(
        upload_to="covers/", blank=True, validators=[validate_image_upload]
    )
    cover_caption = models.CharField(max_length=500, blank=True)
    authors = models.ManyToManyField(Author, blank=True, related_name="articles")
    section = models.ForeignKey(
        Section, null=True, blank=True, on_delete=models.SET_NULL, related_name="articles"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    publish_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    visibility = models.CharField(
        max_length=20, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    email_subject = models.CharField(
        max_length=300, blank=True, help_text="Leave empty to use the title."
    )
    email_audience = models.CharField(
        max_length=20, choices=EmailAudience.choices, default=EmailAudience.EVERYONE
    )
    post_to_telegram = models.BooleanField(default=True)
    comments_enabled = models.BooleanField(default=True)
    external_id = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="Where an imported article came from, e.g. substack:12345.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-published_at", "-created_at"]
        indexes = [models.Index(fields=["status", "-published_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="published") | Q(published_at__isnull=False),
                name="article_published_has_date",
            ),
            models.CheckConstraint(
                condition=~Q(status="scheduled") | Q(publish_at__isnull=False),
                name="article_scheduled_has_date",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("newsletter:article", kwargs={"slug": self.slug})

    @property
    def is_published(self) -> bool:
        return self.status == self.Status.PUBLISHED


COMMENT_MAX_LENGTH = 5000


class Comment(models.Model):
    class Status(models.TextChoices):
        VISIBLE = "visible", "Visible"
        HIDDEN = "hidden", "Hidden"
        DELETED = "deleted", "Deleted by its writer"

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="comments")
    # Empty only on the placeholder of a deleted reader's comment that others replied to.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="comments",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    body = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VISIBLE)
    is_editor_reply = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    authors_notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When the article's authors got this in a digest."
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["article", "status", "created_at"]),
            models.Index(fields=["-created_at"], name="comment_recent_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["visible", "hidden", "deleted"]),
                name="comment_status_valid",
            ),
            models.CheckConstraint(condition=~Q(parent=F("id")), name="comment_not_its_own_parent"),
            models.CheckConstraint(
                condition=Q(status="deleted")
                | (
                    Q(GreaterThan(Length("body"), 0))
                    & Q(LessThanOrEqual(Length("body"), COMMENT_MAX_LENGTH))
                ),
                name="comment_body_length",
            ),
        ]

    def __str__(self) -> str:
        return f"Comment by {self.user} on {self.article}"


class EmailSend(models.Model):
    """The email distribution of one article: at most one per article."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    article = models.OneToOneField(Article, on_delete=models.PROTECT, related_name="email_send")
    audience = models.CharField(max_length=20, choices=Article.EmailAudience.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    recipient_count = models.PositiveIntegerField(default=0)
    sent_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    # Whether its emails carry the open pixel and tracked links: the publication's switch
    # when it was created. Hits of an untracked send are not recorded. db_default: the
    # previous release, still running during a deploy, inserts sends without it.
    tracked = models.BooleanField(default=True, db_default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker last claimed or finished a chunk."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Email send of {self.article}"


class Delivery(models.Model):
    """One email of one send to one subscriber: the outbox and the ledger."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CLAIMED = "claimed", "Claimed"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    class Segment(models.TextChoices):
        FREE = "free", "Free"
        PAID = "paid", "Paid"

    send = models.ForeignKey(EmailSend, on_delete=models.CASCADE, related_name="deliveries")
    subscriber = models.ForeignKey(
        "subscriptions.Subscriber", on_delete=models.CASCADE, related_name="deliveries"
    )
    segment = models.CharField(max_length=10, choices=Segment.choices, default=Segment.FREE)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # A claim is a lease: the worker holding it renews lease_expires_at every few seconds
    # while it sends, and the sweeper hands an expired one to another worker. The token,
    # new at every claim, says whose claim it is; a plain integer compares the same on
    # every database (a datetime's stored form differs between SQLite and PostgreSQL).
    claim_token = models.BigIntegerField(
        null=True, blank=True, help_text="Identifies the worker's claim; new at every claim."
    )
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Another worker may take the claim after this, unless its worker renews it.",
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="A temporary failure is retried from this time."
    )
    provider_message_id = models.CharField(max_length=300, blank=True)
    last_error = models.TextField(blank=True)
    # The reader's first open and first click that looked like a person's (machines'
    # are only counted): newsletter/services/tracking.py.
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["send", "subscriber"], name="delivery_once_per_send")
        ]
        # Workers claim pending rows of a send in id order straight from this index.
        indexes = [models.Index(fields=["send", "status", "id"])]

    def __str__(self) -> str:
        return f"Delivery {self.pk} ({self.status})"


class TelegramPost(models.Model):
    """The post of one article to one Telegram chat: at most one per (article, chat)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        PHOTO = "photo", "Photo with caption"
        TEXT = "text", "Text"

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="telegram_posts")
    chat_id = models.CharField(max_length=100)
    message_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    kind = models.CharField(max_length=10, choices=Kind.choices, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # When a post put back after a 429 or an error is due to be tried again.
    retry_at = models.DateTimeField(null=True, blank=True)
    posted_at = models.DateTimeField(null=True, blank=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["article", "chat_id"], name="telegram_post_once"),
            models.CheckConstraint(
                condition=~Q(status="sent") | Q(message_id__isnull=False),
                name="telegram_post_sent_has_message_id",
            ),
        ]

    def __str__(self) -> str:
        return f"Telegram post of {self.article} to {self.chat_id}"


class CommentBan(models.Model):
    """A reader who may no longer comment. They still read the discussion."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comment_ban"
    )
    reason = models.CharField(max_length=500, blank=True)
    banned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Comment ban of {self.user}"


class BodyImage(models.Model):
    """A picture uploaded into an article's body, with the renditions made of it once.

    The files live in the media storage (`default_storage`: the disk, or S3 through
    django-storages) under `body-images/<key>/`; a body refers to one by the URL of its
    display rendition, which carries the key (newsletter/services/body_images.py).
    """

    key = models.CharField(max_length=32, unique=True, editable=False)
    original = models.CharField(max_length=300, help_text="Storage name of the file as uploaded.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    # {"480": "body-images/<key>/w480.jpg", ...}: width in pixels -> storage name.
    renditions = models.JSONField(default=dict)
    email_rendition = models.CharField(max_length=300)
    size_bytes = models.PositiveIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "image"
        verbose_name_plural = "images"
        constraints = [
            models.CheckConstraint(
                condition=Q(width__gt=0) & Q(height__gt=0), name="body_image_has_size"
            )
        ]

    def __str__(self) -> str:
        return f"Image {self.key[:8]} ({self.width} x {self.height})"


class Engagement(models.TextChoices):
    """Who an open or a click looked like it came from."""

    HUMAN = "human", "A reader"
    MACHINE = "machine", "A machine"


class MachineReason(models.TextChoices):
    NONE = "", "-"
    APPLE_PROXY = "apple_proxy", "Apple Mail Privacy Protection"
    PREFETCH = "prefetch", "Fetched within seconds of delivery"
    SCANNER = "scanner", "A security scanner or bot"
    HEAD = "head", "A HEAD request"
    BURST = "burst", "Many links within a second"


class TrackedLink(models.Model):
    """A link of an article's email, rewritten to the site's signed redirect."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="tracked_links")
    url = models.TextField()
    # sha256 of the URL: a unique index on the URL itself would exceed PostgreSQL's
    # btree row limit for long ones.
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["article", "digest"], name="tracked_link_once")
        ]

    def __str__(self) -> str:
        return self.url


class OpenEvent(models.Model):
    """One fetch of a delivery's open pixel (raw; rolled up daily, deleted after
    TRACKING_RETENTION_DAYS)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="opens")
    # Denormalised from the delivery, so an article's recent events are one index range.
    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()
    engagement = models.CharField(max_length=10, choices=Engagement.choices)
    reason = models.CharField(max_length=20, choices=MachineReason.choices, blank=True)
    # The reader's first open that looked like a person's (it set Delivery.opened_at):
    # counting these counts readers, without a join.
    first = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["at"], name="open_event_at_idx"),
            models.Index(fields=["article", "id"], name="open_event_article_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(engagement="human", reason="")
                | (Q(engagement="machine") & ~Q(reason="")),
                name="open_event_machine_has_reason",
            )
        ]

    def __str__(self) -> str:
        return f"Open of delivery {self.delivery_id} ({self.engagement})"


class ClickEvent(models.Model):
    """One follow of a rewritten link (raw; rolled up daily, deleted after
    TRACKING_RETENTION_DAYS)."""

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="clicks", db_index=False
    )
    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="+", db_index=False)
    link = models.ForeignKey(TrackedLink, on_delete=models.CASCADE, related_name="clicks")
    at = models.DateTimeField()
    engagement = models.CharField(max_length=10, choices=Engagement.choices)
    reason = models.CharField(max_length=20, choices=MachineReason.choices, blank=True)
    # The reader's first human click (it set Delivery.clicked_at), and their first
    # human click on this link.
    first = models.BooleanField(default=False)
    first_of_link = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # A scanner's burst: the delivery's clicks around this one.
            models.Index(fields=["delivery", "at"], name="click_event_delivery_at_idx"),
            models.Index(fields=["at"], name="click_event_at_idx"),
            models.Index(fields=["article", "id"], name="click_event_article_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(engagement="human", reason="")
                | (Q(engagement="machine") & ~Q(reason="")),
                name="click_event_machine_has_reason",
            )
        ]

    def __str__(self) -> str:
        return f"Click of delivery {self.delivery_id} on link {self.link_id} ({self.engagement})"


class ArticleEngagementDay(models.Model):
    """One article's opens and clicks of one day (UTC), rolled up from the raw events.

    `readers_opened`/`readers_clicked` count readers whose first human open or click
    was that day, so a sum over days counts each reader once.
    """

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="engagement_days")
    day = models.DateField()
    human_opens = models.PositiveIntegerField(default=0)
    machine_opens = models.PositiveIntegerField(default=0)
    readers_opened = models.PositiveIntegerField(default=0)
    human_clicks = models.PositiveIntegerField(default=0)
    machine_clicks = models.PositiveIntegerField(default=0)
    readers_clicked = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["article", "day"], name="article_engagement_day_once")
        ]

    def __str__(self) -> str:
        return f"{self.article_id} on {self.day}"


class LinkEngagementDay(models.Model):
    """One tracked link's clicks of one day (UTC); `readers` as in ArticleEngagementDay."""

    link = models.ForeignKey(TrackedLink, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    human_clicks = models.PositiveIntegerField(default=0)
    machine_clicks = models.PositiveIntegerField(default=0)
    readers = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["link", "day"], name="link_engagement_day_once")
        ]

    def __str__(self) -> str:
        return f"{self.link_id} on {self.day}"


class EngagementRollupMark(models.Model):
    """How far the daily rollup has read each raw event table (by id)."""

    table = models.CharField(max_length=20, primary_key=True)
    last_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.table} up to {self.last_id}"
