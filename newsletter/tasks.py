"""Celery tasks of the newsletter app: thin wrappers around services."""

from celery import shared_task

from newsletter.services import (
    comments,
    engagement,
    publishing,
    sending,
    telegram_posting,
    tracking,
)


@shared_task
def publish_due_articles() -> int:
    return len(publishing.publish_due_articles())


@shared_task
def start_email_send(email_send_id: int) -> int:
    """Start a send's parallel chunk chains (queued when the article is published)."""
    return sending.start_send(email_send_id=email_send_id)


@shared_task
def send_email_chunk(email_send_id: int) -> int:
    """Email one claimed chunk, then queue the next; safe to run twice (claims are rows)."""
    result = sending.send_chunk(email_send_id=email_send_id)
    sending.continue_send(email_send_id=email_send_id, result=result)
    return result.sent


@shared_task
def sweep_email_sends() -> int:
    """Periodic: return stale claims to pending, restart stalled sends, retry when due."""
    return len(sending.sweep_email_sends().restarted)


@shared_task
def send_comment_digests() -> int:
    return comments.send_comment_digests()


@shared_task(bind=True, max_retries=10)
def post_article_to_telegram(self, telegram_post_id: int) -> None:
    """Post an article to the channel once; safe to deliver twice (the row is claimed)."""
    try:
        telegram_posting.send_telegram_post(
            telegram_post_id=telegram_post_id, last_attempt=self.request.retries >= self.max_retries
        )
    except telegram_posting.RetryLater as exc:
        raise self.retry(countdown=exc.countdown) from exc


@shared_task
def requeue_stalled_telegram_posts() -> int:
    """Periodic: queue again Telegram posts whose task was lost."""
    return telegram_posting.requeue_stalled_telegram_posts()


@shared_task(bind=True, max_retries=5)
def update_telegram_post(self, telegram_post_id: int) -> None:
    """Edit the article's Telegram post to match the article."""
    try:
        telegram_posting.update_telegram_post(
            telegram_post_id=telegram_post_id, last_attempt=self.request.retries >= self.max_retries
        )
    except telegram_posting.RetryLater as exc:
        raise self.retry(countdown=exc.countdown) from exc


@shared_task
def flush_tracking_hits() -> int:
    """Periodic: write the opens and clicks waiting in Redis (none without Redis)."""
    return tracking.flush_buffered_events()


@shared_task
def roll_up_engagement() -> int:
    """Periodic: add the raw opens and clicks since the last run to the daily counts."""
    return engagement.roll_up_events()


@shared_task
def expire_engagement_events() -> int:
    """Daily: raw opens and clicks older than TRACKING_RETENTION_DAYS, rolled up, go."""
    return engagement.expire_events()
