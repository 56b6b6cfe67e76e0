"""Reader-facing and admin forms of the subscriptions app."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from subscriptions.models import Subscriber
from subscriptions.services.addresses import InvalidAddress, clean_address

# Far above any address the rule accepts (254 characters once normalised), so that the
# rule, not a length check with other words, answers every address a person types.
_TYPED_ADDRESS_MAX_LENGTH = 1000


class AddressField(forms.CharField):
    """An address as a reader types it, checked and normalised by the one address rule
    (`subscriptions.services.addresses.normalize_email`): the subscribe form, sign-in
    and signup accept and refuse exactly the same addresses, in the same words."""

    widget = forms.EmailInput

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("label", "Email address")
        kwargs.setdefault("max_length", _TYPED_ADDRESS_MAX_LENGTH)
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("autocomplete", "email")

    def widget_attrs(self, widget: forms.Widget) -> dict[str, str]:
        # No maxlength in the page: the browser would cut a long address silently.
        attrs = super().widget_attrs(widget)
        attrs.pop("maxlength", None)
        return attrs

    def to_python(self, value: object) -> str:
        text = super().to_python(value)
        if not text:
            return ""
        try:
            return clean_address(text)
        except InvalidAddress as exc:
            raise ValidationError(
                "Please enter an email address we can send to (%(reason)s).",
                code="invalid",
                params={"reason": exc},
            ) from exc


class RefField(forms.CharField):
    """The article a reader came from, as a link or a form names it: never invalid, so a
    ref that names nothing (any length, any character) cannot fail the form it rides
    in; `attribution.source_for_ref` reads it, ignoring what names no article."""

    widget = forms.HiddenInput

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.validators = []  # not even the one refusing NUL characters

    def to_python(self, value: object) -> str:
        return value if isinstance(value, str) else ""


class SubscribeForm(forms.Form):
    email = AddressField()
    # The honeypot: hidden from people by CSS, filled in by form-filling bots.
    website = forms.CharField(required=False, label="Leave this empty")
    source = forms.CharField(required=False, max_length=500, widget=forms.HiddenInput())
    ref = RefField()

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
