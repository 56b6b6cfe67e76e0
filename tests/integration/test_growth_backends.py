"""The growth figures are GROUP BY queries on days truncated by the database in the
publication's time zone: PostgreSQL (`AT TIME ZONE`) and SQLite (Django's own
functions) must put the same rows on the same days. The scenario of
tests/subscriptions/growth_scenario.py is built and read in a `manage.py shell` on each
stack, with TIME_ZONE set as production sets it, from the environment."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Stack
from tests.subscriptions import growth_scenario

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCRIPT = """
import json
from tests.subscriptions import growth_scenario
growth_scenario.build()
print("FIGURES " + json.dumps(growth_scenario.figures()))
"""


def test_growth_figures_are_the_same_days_on_postgresql_and_sqlite(stack: Stack):
    output = stack.shell(SCRIPT, env=stack.environment(TIME_ZONE=growth_scenario.TIME_ZONE))

    [line] = [line for line in output.splitlines() if line.startswith("FIGURES ")]
    assert json.loads(line.removeprefix("FIGURES ")) == growth_scenario.EXPECTED
