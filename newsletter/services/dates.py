"""Dates as readers and editors read them: in the publication's time zone, one format.

The publication's time zone is the `TIME_ZONE` setting (an IANA name such as
"Europe/London"); Django makes it the current zone of every request and task, so the
admin's date fields are entered in it too. Every date shown on the site and in email
is "1 December 2026"; a time with it is "1 December 2026, 09:30 GMT".
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone
from django.utils.dateformat import format as date_format

DATE_FORMAT = "j F Y"
TIME_FORMAT = "H:i T"


def local(value: datetime) -> datetime:
    """The moment in the publication's time zone (a naive value is taken as UTC)."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return timezone.localtime(value, timezone.get_default_timezone())


def long_date(value: datetime) -> str:
    """ "1 December 2026": the day in the publication's time zone."""
    return date_format(local(value), DATE_FORMAT)


def long_datetime(value: datetime) -> str:
    """ "1 December 2026, 09:30 GMT": for a scheduled time."""
    moment = local(value)
    return f"{date_format(moment, DATE_FORMAT)}, {date_format(moment, TIME_FORMAT)}"


def time_zone_name() -> str:
    return str(settings.TIME_ZONE)
