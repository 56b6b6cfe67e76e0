"""The signed-in reader's account page: status, newsletter on/off, export, delete."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from subscriptions.forms import DeleteAccountForm, NewsletterForm
from subscriptions.services.access import access_granting_memberships, subscriber_is_paid
from subscriptions.services.accounts import (
    AccountError,
    delete_reader_account,
    export_reader_data,
    set_newsletter_subscription,
    set_tracking_opt_out,
    subscriber_for_account,
)
from subscriptions.services.ratelimit import client_ip


@login_required
def account_view(request: HttpRequest) -> HttpResponse:
    subscriber = subscriber_for_account(user=request.user)  # type: ignore[arg-type]
    memberships = access_granting_memberships().filter(subscriber=subscriber) if subscriber else []
    return render(
        request,
        "subscriptions/account.html",
        {
            "subscriber": subscriber,
            "is_paid": subscriber_is_paid(subscriber=subscriber),
            "memberships": memberships,
            "newsletter_on": subscriber is not None and subscriber.status == "active",
            "delete_form": DeleteAccountForm(),
        },
    )


@login_required
@require_POST
def newsletter_view(request: HttpRequest) -> HttpResponse:
    form = NewsletterForm(request.POST)
    form.is_valid()
    enabled = bool(form.cleaned_data.get("enabled"))
    try:
        set_newsletter_subscription(
            user=request.user,  # type: ignore[arg-type]
            enabled=enabled,
            ip=client_ip(request),
        )
    except AccountError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            "You will get new articles by email." if enabled else "The newsletter is off.",
        )
    return redirect("subscriptions:account")


@login_required
@require_POST
def tracking_view(request: HttpRequest) -> HttpResponse:
    form = NewsletterForm(request.POST)
    form.is_valid()
    counted = bool(form.cleaned_data.get("enabled"))
    try:
        set_tracking_opt_out(user=request.user, opted_out=not counted)  # type: ignore[arg-type]
    except AccountError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            "Your emails count opens and clicks again."
            if counted
            else "Your emails no longer count opens or clicks.",
        )
    return redirect("subscriptions:account")


@login_required
def export_view(request: HttpRequest) -> JsonResponse:
    data = export_reader_data(user=request.user)  # type: ignore[arg-type]
    response = JsonResponse(data, encoder=DjangoJSONEncoder, json_dumps_params={"indent": 2})
    stamp = timezone.now().strftime("%Y-%m-%d")
    response["Content-Disposition"] = f'attachment; filename="my-data-{stamp}.json"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def delete_view(request: HttpRequest) -> HttpResponse:
    form = DeleteAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            delete_reader_account(user=request.user)  # type: ignore[arg-type]
        except AccountError as exc:
            messages.error(request, str(exc))
            return redirect("subscriptions:account")
        logout(request)
        return render(request, "subscriptions/account_deleted.html")
    return render(request, "subscriptions/account_delete.html", {"form": form})
