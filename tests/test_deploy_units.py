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


def _access_lines(logger_class: type, path: str) -> list[str]:
    import logging

    from gunicorn.config import Config

    config = Config()
    config.set("accesslog", "-")
    logger = logger_class(config)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger.access_log.addHandler(Keep())
    environ = {
        "PATH_INFO": path,
        "RAW_URI": path,
        "QUERY_STRING": "",
        "REQUEST_METHOD": "GET",
        "REMOTE_ADDR": "198.51.100.7",
        "HTTP_USER_AGENT": "Thunderbird/128",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }

    class Response:
        status = "200 OK"
        sent = 43
        headers: list[tuple[str, str]] = []

    class Request:
        headers: list[tuple[str, str]] = []

    from datetime import timedelta

    logger.access(Response(), Request(), environ, timedelta(milliseconds=2))
    return records


@pytest.mark.parametrize(
    "command", [_procfile()["web"], shlex.split(_service(UNITS["web"])["ExecStart"])]
)
def test_the_web_process_logs_requests_but_never_an_open_or_a_click(command):
    from importlib import import_module

    module, _, name = command[command.index("--logger-class") + 1].rpartition(".")
    logger_class = getattr(import_module(module), name)
    assert "198.51.100.7" in _access_lines(logger_class, "/healthz")[0]
    assert _access_lines(logger_class, "/o/AAAAAAAAAAAAAQ.gif") == []
    assert _access_lines(logger_class, "/r/abc.def.AAAAAAAAAAAAAQ/") == []
