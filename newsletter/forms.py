"""Forms of the editor's admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.urls import reverse_lazy
from django.utils import timezone
from django_prose_editor.fields import ProseEditorFormField
from django_prose_editor.widgets import AdminProseEditorWidget

from config.mail import AddressError, ascii_domain, parse_mailbox
from newsletter.models import Article
from newsletter.services.content import PAYWALL_MARKER, sanitize_body
from publication.emails import sender_address
from publication.models import Publication

# What the article editor offers. Whatever it produces is sanitised again on the way in
# (newsletter.services.content.sanitize_body), so the editor is a convenience, not a gate.
ARTICLE_EDITOR_EXTENSIONS: dict[str, Any] = {
    "Heading": {"levels": [2, 3, 4]},
    "Bold": True,
    "Italic": True,
    "Underline": True,
    "Strike": True,
    "Subscript": True,
    "Superscript": True,
    "Code": True,
    "CodeBlock": True,
    "BulletList": True,
    "OrderedList": True,
    "ListItem": True,
    "Blockquote": True,
    "HorizontalRule": True,
    "HardBreak": True,
    "Link": {"enableTarget": False, "protocols": ["http", "https", "mailto"]},
    "Figure": True,
    "Caption": True,
    "Image": True,
    "Table": True,
    "TableRow": True,
    "TableHeader": True,
    "TableCell": True,
    "History": True,
    "HTML": True,
    "SpecialCharacters": True,
    "Paywall": True,
    "FootnoteIds": True,
    "VideoEmbed": True,
    "BodyImageUpload": {"uploadUrl": reverse_lazy("admin:newsletter_bodyimage_upload")},
    "Footnote": True,
}


class ArticleAdminForm(forms.ModelForm):
    body = ProseEditorFormField(
        required=False,
        config={"extensions": ARTICLE_EDITOR_EXTENSIONS},
        widget=AdminProseEditorWidget,
        help_text=(
            "Use the lock button to insert the paywall: on subscriber and paid articles, "
            "readers without access see only what comes before it. Add pictures with the "
            "image button, or drop or paste them here; notes with the numbered-list button."
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "publish_at" in self.fields:
            self.fields["publish_at"].label = "Publish at"
            self.fields["publish_at"].help_text = (
                f"In the publication's time zone, {settings.TIME_ZONE}. Set it, then press "
                "“Schedule…”; move a scheduled article by changing it and saving."
            )

    class Meta:
        model = Article
        fields = [
            "title",
            "slug",
            "subtitle",
            "body",
            "cover_image",
            "cover_caption",
            "publish_at",
            "visibility",
            "section",
            "authors",
            "email_subject",
            "email_audience",
            "post_to_telegram",
            "comments_enabled",
            "external_id",
        ]

    def clean_body(self) -> str:
        body = sanitize_body(html=self.cleaned_data.get("body") or "")
        if body.count(PAYWALL_MARKER) > 1:
            raise forms.ValidationError("An article can have only one paywall marker.")
        return body

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        status = self.instance.status if self.instance.pk else Article.Status.DRAFT
        publish_at = cleaned.get("publish_at")
        if status == Article.Status.SCHEDULED and not publish_at:
            self.add_error(
                "publish_at",
                "A scheduled article needs a publish time. Unschedule it to remove the time.",
            )
        elif (
            status == Article.Status.SCHEDULED
            and "publish_at" in self.changed_data
            and publish_at is not None
            and publish_at <= timezone.now()
        ):
            self.add_error("publish_at", "Pick a time in the future, or publish now.")
        return cleaned


class PublicationAdminForm(forms.ModelForm):
    """The publication's settings: the sender fields must make one valid From line."""

    # A link typed without a scheme is https (Django 6's default; 5.x warns).
    kofi_url = forms.URLField(label="Ko-fi link", required=False, assume_scheme="https")
    buymeacoffee_url = forms.URLField(
        label="Buy Me a Coffee link", required=False, assume_scheme="https"
    )
    telegram_channel_url = forms.URLField(
        label="Telegram channel link", required=False, assume_scheme="https"
    )

    class Meta:
        model = Publication
        # The admin's fieldsets add the other fields.
        fields = ["name", "sender_name", "sender_email", "reply_to_email", "kofi_url",
                  "buymeacoffee_url", "telegram_channel_url"]  # fmt: skip

    def clean_sender_name(self) -> str:
        name = " ".join(self.cleaned_data.get("sender_name", "").split())
        if any(not ch.isprintable() for ch in name):
            raise forms.ValidationError("The sender name may not contain control characters.")
        return name

    def clean_name(self) -> str:
        name = self.cleaned_data.get("name", "").strip()
        if any(not ch.isprintable() for ch in name):
            raise forms.ValidationError(
                "The name may not contain line breaks or control characters."
            )
        return name

    def clean_sender_email(self) -> str:
        return _mailbox_address(self.cleaned_data.get("sender_email", ""))

    def clean_reply_to_email(self) -> str:
        return _mailbox_address(self.cleaned_data.get("reply_to_email", ""))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("sender_email"):
            preview = Publication(
                name=cleaned.get("name") or "",
                sender_name=cleaned.get("sender_name") or "",
                sender_email=cleaned["sender_email"],
            )
            try:
                parse_mailbox(sender_address(preview))
            except AddressError as exc:
                raise forms.ValidationError(
                    f"These sender fields make no valid From line: {exc}"
                ) from exc
        return cleaned


def _mailbox_address(value: str) -> str:
    """An address mail servers everywhere accept: an ASCII local part (a non-ASCII one
    needs SMTPUTF8 end to end), the domain as typed (sent in IDNA)."""
    value = value.strip()
    if not value:
        return value
    try:
        address = parse_mailbox(value)
        ascii_domain(address.domain)
    except (AddressError, UnicodeError) as exc:
        raise forms.ValidationError(f"{value} is not a valid email address.") from exc
    if address.display_name:
        raise forms.ValidationError("Give the address only; the name has its own field.")
    if not address.username.isascii():
        raise forms.ValidationError(
            "Use an address whose part before the @ is plain ASCII: many mail servers "
            "cannot deliver from any other."
        )
    return value
