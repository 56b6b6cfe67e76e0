"""Forms of the discussion under articles: writing a comment and choosing a display name."""

from __future__ import annotations

from django import forms

from newsletter.services.comments import DISPLAY_NAME_MAX_LENGTH, MAX_LENGTH


def _body_field(*, rows: int, required_message: str) -> forms.CharField:
    # No max_length here: browsers send each line break as CRLF but count it as one
    # character against the textarea's maxlength, so the service checks the length
    # after normalising line breaks (comments.clean_body).
    return forms.CharField(
        label="Your comment",
        strip=True,
        widget=forms.Textarea(attrs={"rows": rows, "maxlength": MAX_LENGTH}),
        error_messages={"required": required_message},
    )


class CommentForm(forms.Form):
    body = _body_field(rows=4, required_message="Write something before posting.")
    parent = forms.IntegerField(required=False, widget=forms.HiddenInput, min_value=1)
    # Hidden from people (off-screen, skipped by keyboard and screen readers); bots that
    # fill in every field give themselves away.
    website = forms.CharField(required=False, label="Leave this field empty")

    def is_spam(self) -> bool:
        return bool(self.data.get("website", "").strip())


class CommentEditForm(forms.Form):
    body = _body_field(rows=6, required_message="Write something, or delete the comment instead.")


class DisplayNameForm(forms.Form):
    name = forms.CharField(
        label="Name shown with your comments",
        max_length=DISPLAY_NAME_MAX_LENGTH,
        required=False,
        help_text="Leave empty to appear as “A reader”.",
    )
