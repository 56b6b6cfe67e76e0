"""/healthz: database and broker status as JSON, for load balancers and uptime checks."""

from __future__ import annotations

import pytest

from config.celery import app as celery_app

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_broker_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert "no-store" in response["Cache-Control"]


def test_healthz_answers_503_when_the_broker_is_unreachable(client, monkeypatch):
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    monkeypatch.setitem(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")
    monkeypatch.setitem(celery_app.conf, "broker_write_url", None)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["database"] == "ok"
    assert body["broker"].startswith("error")


def test_healthz_answers_plain_http_probes_when_the_site_redirects_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/").status_code == 301
    assert client.get("/healthz").status_code == 200
