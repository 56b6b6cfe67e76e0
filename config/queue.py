"""Queueing a Celery task by its name, for services.

An app's `tasks.py` imports the services it wraps, so a service that queues more work
(a send's chunks, a Telegram post, a confirmation email) names the task instead of
importing it, and every import points down: tasks -> services -> this module.

Each app's AppConfig.ready imports its tasks, so in every process a name resolves to
the task itself (run eagerly in tests, routed as configured in production). A name is
declared once, with `task_name`, beside the service that queues it; the system check
`config.E001` fails at start for a declared name that no task has.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from config.celery import app

_declared: set[str] = set()


def task_name(name: str) -> str:
    """Declare the dotted name of a task a service queues ("newsletter.tasks.x")."""
    _declared.add(name)
    return name


def enqueue(name: str, *args: Any) -> None:
    """Queue the task called `name` with these arguments: `task.delay(*args)`."""
    app.tasks[name].delay(*args)


def check_task_names(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    registered = set(app.tasks)
    return [
        checks.Error(
            f"A service queues the Celery task {name!r}, but no task has that name.",
            hint="Fix the name passed to config.queue.task_name, or define the task.",
            id="config.E001",
        )
        for name in sorted(_declared - registered)
    ]
