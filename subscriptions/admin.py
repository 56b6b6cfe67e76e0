"""The editor's admin for readers."""

from django.contrib import admin  # noqa: F401

from subscriptions import admin_billing  # noqa: F401
