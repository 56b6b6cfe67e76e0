"""Services queue tasks by name (config/queue.py): every declared name is a task, and a
wrong one fails the system checks at start."""

from __future__ import annotations

from django.core import checks

from config import queue


def test_every_task_name_a_service_declares_is_a_registered_task():
    declared = {
        "newsletter.tasks.start_email_send",
        "newsletter.tasks.send_email_chunk",
        "newsletter.tasks.post_article_to_telegram",
        "newsletter.tasks.update_telegram_post",
        "subscriptions.tasks.send_confirmation_email",
        "subscriptions.tasks.send_welcome_email",
    }
    assert declared <= queue._declared
    assert queue.check_task_names() == []
    assert queue.check_task_names in checks.registry.registry.get_checks()


def test_a_declared_name_without_a_task_fails_the_checks(monkeypatch):
    monkeypatch.setattr(queue, "_declared", {*queue._declared, "newsletter.tasks.send_emial"})

    errors = queue.check_task_names()

    assert [(e.id, "send_emial" in e.msg) for e in errors] == [("config.E001", True)]
