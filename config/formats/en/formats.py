"""Dates as the publication writes them, everywhere Django formats one without being told
how (the admin's read-only fields and lists): "1 December 2026", "1 December 2026, 09:30".
Input formats stay Django's own."""

DATE_FORMAT = "j F Y"
DATETIME_FORMAT = "j F Y, H:i"
SHORT_DATE_FORMAT = "j M Y"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
MONTH_DAY_FORMAT = "j F"
