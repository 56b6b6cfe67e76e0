"""The editor's admin for publishing."""

from django.contrib import admin  # noqa: F401

# Admin modules of the distribution and discussion features register themselves here.
from newsletter import admin_comments, admin_sending, admin_telegram  # noqa: F401
