"""Celery tasks of the subscriptions app: thin wrappers around services."""
