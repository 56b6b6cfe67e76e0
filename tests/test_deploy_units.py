"""The systemd units in deploy/ run the Procfile's three process types and restart them."""

from __future__ import annotations

import configparser
import shlex

import pytest

from tests.processes import ROOT

UNITS = {
    "web": "broadside-web.service",
    "worker": "broadside-worker.service",
    "beat": "broadside-beat.service",
}


def _procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {
        name: shlex.split(command)
        for name, command in (
            line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")
        )
    }


def _service(unit: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "deploy" / unit)
    return parser["Service"]


@pytest.mark.parametrize(("process", "unit"), UNITS.items())
def test_each_process_type_has_a_unit_that_restarts_it_whatever_ended_it(process, unit):
    service = _service(unit)
    assert service["Restart"] == "always"
    assert float(service["RestartSec"]) <= 5
    # The unit runs the Procfile's program with the same application and subcommand
    # (`config.wsgi --bind`, `-A config worker`, `-A config beat`).
    program, *arguments = shlex.split(service["ExecStart"])
    procfile_program, *procfile_arguments = _procfile()[process]
    assert program.endswith(f"/.venv/bin/{procfile_program}")
    same = 2 if process == "web" else 3
    assert arguments[:same] == procfile_arguments[:same]
    assert "EnvironmentFile" in service
