"""Group subscriptions: the buyer's page (/account/group/) and joining by invitation."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from subscriptions import stripe_client
from subscriptions.services import billing, groups
from subscriptions.services.accounts import subscriber_for_account
from subscriptions.services.addresses import InvalidAddress
from subscriptions.services.ratelimit import client_ip, consume, network_key


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)


class SeatsForm(forms.Form):
    seats = forms.IntegerField(min_value=1, max_value=billing.MAX_SEATS)


@login_required
@require_http_methods(["GET", "POST"])
def group_view(request: HttpRequest) -> HttpResponse:
    subscriber = subscriber_for_account(user=request.user)  # type: ignore[arg-type]
    owned = list(groups.groups_of(subscriber=subscriber).filter(status__in=groups.LIVE_STATUSES))
    group = owned[0] if owned else None
    if request.method == "POST" and group is not None:
        if not consume(scope="group", key=network_key(client_ip(request)), limit=60, period=600):
            messages.error(request, "Too many attempts. Please wait a few minutes.")
            return redirect("/account/group/")
        action = request.POST.get("action")
        try:
            if action == "invite":
                form = InviteForm(request.POST)
                if not form.is_valid():
                    raise groups.GroupError("Enter the reader's email address.")
                invite = groups.invite_to_group(group=group, email=form.cleaned_data["email"])
                messages.success(request, f"Invitation sent to {invite.email}.")
            elif action == "remove":
                invite_id = request.POST.get("invite", "")
                if not invite_id.isdigit():
                    raise groups.GroupError("That reader is not in this group.")
                removed = groups.remove_from_group(group=group, invite_id=int(invite_id))
                messages.success(request, f"{removed.email} no longer has a seat.")
            elif action == "seats":
                seats_form = SeatsForm(request.POST)
                if not seats_form.is_valid():
                    raise groups.GroupError(f"Choose between 1 and {billing.MAX_SEATS} seats.")
                billing.change_group_seats(
                    group=group, seats=seats_form.cleaned_data["seats"], attempt=uuid.uuid4().hex
                )
                messages.success(
                    request, "Seats changed; Stripe bills the difference on your next invoice."
                )
        except InvalidAddress as exc:
            messages.error(request, f"Please check the email address: {exc}.")
        except (groups.GroupError, billing.BillingError, stripe_client.StripeError) as exc:
            messages.error(request, str(exc))
        return redirect("/account/group/")
    invites = list(group.invites.filter(removed_at__isnull=True)) if group else []
    return render(
        request,
        "subscriptions/group.html",
        {
            "group": group,
            "invites": invites,
            "seats_free": (group.quantity - len(invites)) if group else 0,
        },
    )


@require_http_methods(["GET", "POST"])
def join_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows the invitation and changes nothing; POST takes the seat."""
    try:
        invite = groups.invite_for_token(token=token)
    except groups.GroupError as exc:
        return render(request, "subscriptions/group_join.html", {"error": str(exc)}, status=404)
    if request.method == "POST":
        if not consume(
            scope="group_join", key=network_key(client_ip(request)), limit=20, period=600
        ):
            return render(
                request,
                "subscriptions/group_join.html",
                {"invite": invite, "error": "Too many attempts. Please wait a few minutes."},
                status=429,
            )
        try:
            joined = groups.join_group(token=token)
        except groups.GroupError as exc:
            return render(
                request,
                "subscriptions/group_join.html",
                {"invite": invite, "error": str(exc)},
                status=409,
            )
        if request.user.is_authenticated and request.user.pk == joined.user.pk:
            if joined.first_time:
                messages.success(request, "You have joined the group: you can read every article.")
            else:
                messages.info(request, "You have already joined this group.")
            return redirect("/account/")
        if not joined.first_time:
            # The link signed in once, when it took the seat; it is not a login link after.
            messages.info(
                request,
                "You have already joined this group. Sign in with a code sent to "
                f"{joined.invite.email} to read.",
            )
            return redirect(reverse("account_request_login_code"))
        if not getattr(joined.user, "is_staff", False):
            # The link reached this mailbox and took the seat; staff sign in with a code.
            login(request, joined.user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "You have joined the group: you can read every article.")
        return redirect("/account/")
    return render(request, "subscriptions/group_join.html", {"invite": invite})
