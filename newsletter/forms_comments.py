"""Forms of the discussion under articles: writing a comment and choosing a display name."""

from __future__ import annotations

from django import forms

from newsletter.services.comments import DISPLAY_NAME_MAX_LENGTH, MAX_LENGTH


class CommentForm(forms.Form):
    body = forms.CharField(
        label="Your comment",
        max_length=MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4, "maxlength": MAX_LENGTH}),
        error_messages={"required": "Write something before posting."},
    )
    parent = forms.IntegerField(required=False, widget=forms.HiddenInput, min_value=1)
    # Hidden from people (off-screen, skipped by keyboard and screen readers); bots that
    # fill in every field give themselves away.
    website = forms.CharField(required=False, label="Leave this field empty")

    def is_spam(self) -> bool:
        return bool(self.data.get("website", "").strip())


class CommentEditForm(forms.Form):
    body = forms.CharField(
        label="Your comment",
        max_length=MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 6, "maxlength": MAX_LENGTH}),
        error_messages={"required": "Write something, or delete the comment instead."},
    )


class DisplayNameForm(forms.Form):
    name = forms.CharField(
        label="Name shown with your comments",
        max_length=DISPLAY_NAME_MAX_LENGTH,
        required=False,
        help_text="Leave empty to appear as “A reader”.",
    )
