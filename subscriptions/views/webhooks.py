"""Stripe's webhook endpoint: verify, record, queue, answer."""

from __future__ import annotations

import logging

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from subscriptions.services.stripe_events import WebhookRejected, receive_webhook
from subscriptions.tasks import process_stripe_event

logger = logging.getLogger(__name__)


def _queue(event_id: int) -> None:
    try:
        process_stripe_event.delay(event_id)
    except Exception:
        logger.exception("Could not queue Stripe event %s; it will be retried", event_id)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request.
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        received = receive_webhook(
            payload=request.body, signature_header=request.headers.get("Stripe-Signature")
        )
    except WebhookRejected as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    if received.created:
        event_id = received.event.pk
        transaction.on_commit(lambda: _queue(event_id))
    return JsonResponse({"received": True, "duplicate": not received.created})
