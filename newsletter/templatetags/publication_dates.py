"""`{{ value|long_date }}`: a date in the publication's time zone, as "1 December 2026"."""

from __future__ import annotations

from datetime import datetime

from django import template

from newsletter.services.dates import long_date as _long_date
from newsletter.services.dates import long_datetime as _long_datetime

register = template.Library()


@register.filter
def long_date(value: datetime | None) -> str:
    return _long_date(value) if value else ""


@register.filter
def long_datetime(value: datetime | None) -> str:
    return _long_datetime(value) if value else ""
