"""Reader-facing and admin forms of the subscriptions app."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from subscriptions.models import Subscriber
from subscriptions.services.addresses import InvalidAddress, clean_address


class SubscribeForm(forms.Form):
    email = forms.CharField(max_length=254, widget=forms.EmailInput())
    # The honeypot: hidden from people by CSS, filled in by form-filling bots.
    website = forms.CharField(required=False, label="Leave this empty")
    source = forms.CharField(required=False, max_length=500, widget=forms.HiddenInput())

    def clean_email(self) -> str:
        try:
            return clean_address(self.cleaned_data["email"])
        except InvalidAddress as exc:
            raise ValidationError(
                "Please enter a valid email address (%(reason)s).", params={"reason": exc}
            ) from exc

    @property
    def is_bot(self) -> bool:
        return bool(self.data.get("website"))


class NewsletterForm(forms.Form):
    enabled = forms.BooleanField(required=False)


class DeleteAccountForm(forms.Form):
    confirm = forms.BooleanField(
        required=True, label="I understand that this erases my account and cannot be undone."
    )


class SubscriberImportForm(forms.Form):
    csv_file = forms.FileField(
        label="CSV file",
        help_text="Columns: email (required), name, created_at, status. UTF-8, header row.",
    )


class SubscriberAdminForm(forms.ModelForm):
    """The admin's subscriber form: the address is stored in its one normal form."""

    class Meta:
        model = Subscriber
        fields = "__all__"  # noqa: DJ007 - the admin picks the fields it shows

    def clean_email(self) -> str:
        try:
            return clean_address(self.cleaned_data["email"])
        except InvalidAddress as exc:
            raise ValidationError(str(exc)) from exc
