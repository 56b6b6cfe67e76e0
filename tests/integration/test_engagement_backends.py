"""The charts' figures are GROUP BY queries on days truncated in UTC by the database:
PostgreSQL and SQLite must put the same events on the same days and give the same
totals. The scenario of tests/newsletter/engagement_scenario.py is built and read in a
`manage.py shell` on each stack, in a time zone far from UTC."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Stack
from tests.newsletter import engagement_scenario

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCRIPT = """
import json
from tests.newsletter import engagement_scenario
engagement_scenario.build()
print("FIGURES " + json.dumps(engagement_scenario.figures()))
"""


def test_opens_and_clicks_fall_on_the_same_utc_days_on_postgresql_and_sqlite(stack: Stack):
    output = stack.shell(SCRIPT, env=stack.environment(TIME_ZONE=engagement_scenario.TIME_ZONE))

    [line] = [line for line in output.splitlines() if line.startswith("FIGURES ")]
    assert json.loads(line.removeprefix("FIGURES ")) == engagement_scenario.EXPECTED
