"""Celery tasks of the newsletter app: thin wrappers around services."""

from celery import shared_task

from newsletter.services import publishing


@shared_task
def publish_due_articles() -> int:
    return len(publishing.publish_due_articles())
