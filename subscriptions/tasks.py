"""Celery tasks of the subscriptions app: thin wrappers around services."""

from celery import shared_task

from subscriptions.services import gifts, memberships, signup, stripe_events, stripe_outbox


@shared_task(acks_late=True)
def process_stripe_event(event_id: int) -> bool:
    """Apply one stored webhook event; failures are recorded on it and retried later."""
    return stripe_events.process_event(event_id=event_id)


@shared_task
def drain_stripe_events() -> int:
    """Apply the stored events that are due, in order per Stripe object (the outbox's
    poll, every STRIPE_OUTBOX_POLL_SECONDS)."""
    return stripe_outbox.drain()


@shared_task
def retry_stripe_events() -> int:
    """The sweeper's earlier name, for tasks already queued under it: the drain also
    retries failed events and picks up those of a worker that died."""
    return stripe_outbox.drain()


@shared_task
def expire_memberships() -> dict[str, int]:
    """End lapsed comp and gift memberships; remind readers a week before."""
    return memberships.expire_memberships()


@shared_task
def deliver_gifts() -> int:
    """Email the recipients of the gifts whose delivery day has come."""
    return gifts.deliver_due_gifts()


# Signup emails are sent here, not in the request: the answer to a signup must take as
# long for an address that gets mail as for one that does not (no address enumeration).
# OSError covers smtplib's errors and dropped connections.
@shared_task(autoretry_for=(OSError,), retry_backoff=30, max_retries=5)
def send_confirmation_email(subscriber_id: int, source_article_id: int | None = None) -> bool:
    return signup.send_confirmation_email(
        subscriber_id=subscriber_id, source_article_id=source_article_id
    )


@shared_task(autoretry_for=(OSError,), retry_backoff=30, max_retries=5)
def send_welcome_email(subscriber_id: int) -> bool:
    return signup.send_welcome_email(subscriber_id=subscriber_id)
