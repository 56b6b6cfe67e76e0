"""Stripe's webhook endpoint: verify, record, answer.

Nothing else happens in the request: the stored event is the workers' to-do
(`subscriptions.services.stripe_outbox`), so no broker is called and an event accepted
while the broker is down is applied when the workers can.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from subscriptions.services.stripe_events import WebhookRejected, receive_webhook

# The two answers to an accepted delivery, made once (what JsonResponse would write).
_STORED = b'{"received": true, "duplicate": false}'
_DUPLICATE = b'{"received": true, "duplicate": true}'


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request.
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        received = receive_webhook(
            payload=request.body, signature_header=request.META.get("HTTP_STRIPE_SIGNATURE")
        )
    except WebhookRejected as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return HttpResponse(
        _STORED if received.created else _DUPLICATE, content_type="application/json"
    )
