"""The editors' admin site: a throttled sign-in with two-factor codes.

- **Throttle.** After `STAFF_LOGIN_FAILURES` failed sign-ins for one username, or
  `STAFF_LOGIN_FAILURES_PER_IP` from one client address, within
  `STAFF_LOGIN_WINDOW` seconds, the admin sign-in refuses every attempt for that
  username or address, the right password included, until the window has passed
  (429). Counted in the cache: Redis in production, shared by every web process.
- **Two-factor.** Staff add a TOTP authenticator app and recovery codes through
  django-allauth's MFA pages (`/accounts/2fa/`). A staff user who has one must give its
  current code (or an unused recovery code) with the password. With
  `STAFF_MFA_REQUIRED` (on by default when DEBUG is off) a staff user without one is
  sent to set it up before any admin page opens.

allauth's own sign-in pages apply allauth's MFA stage to staff too, so signing in by an
emailed code does not skip the authenticator.
"""

from __future__ import annotations

import hashlib
from functools import wraps
from typing import Any

from allauth.account.internal.flows.login import record_authentication
from allauth.mfa.adapter import get_adapter as get_mfa_adapter
from allauth.mfa.base.forms import AuthenticateForm
from allauth.mfa.internal.flows.add import validate_can_add_authenticator
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode

from subscriptions.services.ratelimit import client_ip, network_key

STAFF_LOGIN_FAILURES = 5
STAFF_LOGIN_FAILURES_PER_IP = 20
STAFF_LOGIN_WINDOW = 15 * 60


def _failure_keys(request: HttpRequest, username: str) -> list[tuple[str, int]]:
    user_digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    ip_digest = hashlib.sha256(network_key(client_ip(request)).encode()).hexdigest()[:32]
    return [
        (f"staff-login-failures:user:{user_digest}", STAFF_LOGIN_FAILURES),
        (f"staff-login-failures:ip:{ip_digest}", STAFF_LOGIN_FAILURES_PER_IP),
    ]


def staff_login_locked(request: HttpRequest, username: str) -> bool:
    return any((cache.get(key) or 0) >= limit for key, limit in _failure_keys(request, username))


def record_staff_login_failure(request: HttpRequest, username: str) -> None:
    for key, _limit in _failure_keys(request, username):
        if not cache.add(key, 1, timeout=STAFF_LOGIN_WINDOW):
            try:
                cache.incr(key)
            except ValueError:  # expired between add() and incr()
                cache.add(key, 1, timeout=STAFF_LOGIN_WINDOW)


class StaffLoginLocked(forms.ValidationError):
    pass


class StaffLoginForm(AdminAuthenticationForm):
    """Username, password and, for staff with an authenticator, its code."""

    code = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=64,
        help_text="From your authenticator app, or one of your recovery codes. Leave it "
        "empty if you have not set up two-factor authentication yet.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    # One answer for every failure: a wrong password, no code, a wrong code. A distinct
    # error after the password would tell whoever guessed it that it was right.
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter the correct %(username)s, password and, if you set "
        "up two-factor authentication, the code from your authenticator app (or a recovery "
        "code) for a staff account. Note that the fields may be case-sensitive.",
    }

    def clean(self) -> dict[str, Any]:
        request = self.request
        username = self.cleaned_data.get("username") or ""
        assert request is not None
        if staff_login_locked(request, username):
            raise StaffLoginLocked(
                "Too many failed sign-ins. Wait 15 minutes, then try again.", code="locked"
            )
        try:
            cleaned = super().clean()
            self._check_second_factor()
        except forms.ValidationError:
            record_staff_login_failure(request, username)
            raise
        return cleaned

    def _check_second_factor(self) -> None:
        user = self.get_user()
        if user is None or not get_mfa_adapter().is_mfa_enabled(user):
            return
        code = (self.cleaned_data.get("code") or "").strip()
        second = AuthenticateForm(data={"code": code}, user=user)
        if not code or not second.is_valid():
            raise self.get_invalid_login_error()
        second.save()  # marks a recovery code used, records the authentication


class StaffAdminSite(admin.AdminSite):
    login_form = StaffLoginForm
    site_header = "Broadside"
    site_title = "Broadside admin"
    index_title = "Home"
    index_template = "admin/editors_home.html"

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        from publication.models import Publication  # the admin site loads before the apps

        try:
            name = Publication.load().name
        except DatabaseError:  # before the first migration
            name = ""
        if name:
            context["site_header"] = name
            context["site_title"] = f"{name} admin"
        return context

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        app_list = super().get_app_list(request, app_label)
        if app_label is not None:
            return app_list  # an app's own page keeps Django's list
        from newsletter.admin_home import grouped_app_list

        return grouped_app_list(app_list)

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        from newsletter.admin_charts import may_see_money
        from newsletter.admin_home import editor_dashboard

        dashboard = editor_dashboard(with_money=may_see_money(request.user))
        return super().index(request, {**(extra_context or {}), "dashboard": dashboard})

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None):
        response = super().login(request, extra_context)
        if request.method == "POST":
            if request.user.is_authenticated:
                # The password was just given: allauth's MFA pages (setting up the
                # authenticator) need not ask for it again for a few minutes.
                record_authentication(
                    request, request.user, method="password", reauthenticated=True
                )
            else:
                form = getattr(response, "context_data", {}).get("form")
                if form is not None and any(
                    e.code == "locked" for e in form.non_field_errors().as_data()
                ):
                    response.status_code = 429
        return response

    def admin_view(self, view: Any, cacheable: bool = False) -> Any:
        inner = super().admin_view(view, cacheable)

        @wraps(inner)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if (
                settings.STAFF_MFA_REQUIRED
                and request.path != reverse("admin:logout", current_app=self.name)
                and user.is_authenticated
                and user.is_staff
                and not get_mfa_adapter().is_mfa_enabled(user)
            ):
                query = urlencode({"next": request.get_full_path()})
                try:
                    validate_can_add_authenticator(user)
                except ValidationError:
                    # allauth refuses to set up an authenticator while an address of the
                    # account is unverified; sending them to set it up would bounce them
                    # back here for ever. They verify or remove that address first.
                    messages.warning(
                        request,
                        "Verify or remove your unverified email address, then set up "
                        "two-factor authentication to open the admin.",
                    )
                    return HttpResponseRedirect(f"{reverse('account_email')}?{query}")
                return HttpResponseRedirect(f"{reverse('mfa_activate_totp')}?{query}")
            return inner(request, *args, **kwargs)

        guarded.admin_site = self  # type: ignore[attr-defined]
        return guarded
