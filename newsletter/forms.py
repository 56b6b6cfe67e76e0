"""Forms of the editor's admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone
from django_prose_editor.fields import ProseEditorFormField
from django_prose_editor.widgets import AdminProseEditorWidget

from newsletter.models import Article
from newsletter.services.content import PAYWALL_MARKER, sanitize_body

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
}


class ArticleAdminForm(forms.ModelForm):
    body = ProseEditorFormField(
        required=False,
        config={"extensions": ARTICLE_EDITOR_EXTENSIONS},
        widget=AdminProseEditorWidget,
        help_text=(
            "Use the lock button to insert the paywall: on subscriber and paid articles, "
            "readers without access see only what comes before it."
        ),
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


class ScheduleForm(forms.Form):
    publish_at = forms.DateTimeField(
        label="Publish at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
    )
