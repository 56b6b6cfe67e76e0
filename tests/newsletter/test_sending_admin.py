from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.publishing import publish_article
from tests.factories import ArticleFactory, SubscriberFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def email_send():
    SubscriberFactory.create_batch(3)
    email_send = publish_article(article=ArticleFactory(slug="the-straits")).email_send
    EmailSend.objects.filter(pk=email_send.pk).update(
        status=EmailSend.Status.SENDING, started_at=timezone.now()
    )
    return email_send


def test_the_send_page_shows_progress_and_the_controls_that_apply(editor_client, email_send):
    Delivery.objects.filter(pk=email_send.deliveries.first().pk).update(
        status=Delivery.Status.FAILED, last_error="550 No such mailbox"
    )

    response = editor_client.get(reverse("admin:newsletter_emailsend_change", args=[email_send.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-field="pending">2<' in html
    assert 'data-field="failed">1<' in html
    assert "550 No such mailbox" in html
    assert reverse("admin:newsletter_emailsend_control", args=[email_send.pk, "pause"]) in html
    assert reverse("admin:newsletter_emailsend_control", args=[email_send.pk, "resume"]) not in html


def test_the_progress_endpoint_reports_live_counts_as_json(editor_client, email_send):
    url = reverse("admin:newsletter_emailsend_progress", args=[email_send.pk])
    assert editor_client.get(url).json()["pending"] == 3

    sending.send_chunk(email_send_id=email_send.pk)

    data = editor_client.get(url).json()
    assert (data["pending"], data["sent"], data["status"]) == (0, 3, "sending")
    assert data["percent"] == 100.0
    assert data["rate_per_minute"] == 3


def test_the_progress_endpoint_is_for_staff_only(client, email_send):
    client.force_login(UserFactory())
    url = reverse("admin:newsletter_emailsend_progress", args=[email_send.pk])

    response = client.get(url)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_editors_pause_resume_and_cancel_from_the_send_page(
    editor_client, email_send, django_capture_on_commit_callbacks
):
    def control(name):
        url = reverse("admin:newsletter_emailsend_control", args=[email_send.pk, name])
        return editor_client.post(url)

    assert control("pause").status_code == 302
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.PAUSED

    with django_capture_on_commit_callbacks(execute=True):
        control("resume")
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT  # resumed and (eagerly) finished
    assert len(mail.outbox) == 3

    response = control("cancel")
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("can be cancelled" in m for m in messages)
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENT


def test_controls_need_a_post(editor_client, email_send):
    url = reverse("admin:newsletter_emailsend_control", args=[email_send.pk, "cancel"])

    assert editor_client.get(url).status_code == 405
    email_send.refresh_from_db()
    assert email_send.status == EmailSend.Status.SENDING


def test_the_retry_action_queues_failed_deliveries_again(
    editor_client, email_send, django_capture_on_commit_callbacks
):
    email_send.deliveries.update(status=Delivery.Status.FAILED, last_error="421 busy")
    EmailSend.objects.filter(pk=email_send.pk).update(status=EmailSend.Status.SENT, failed_count=3)

    with django_capture_on_commit_callbacks(execute=True):
        response = editor_client.post(
            reverse("admin:newsletter_emailsend_changelist"),
            {"action": "retry_failed", "_selected_action": [email_send.pk]},
        )

    assert response.status_code == 302
    assert len(mail.outbox) == 3
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}


def test_failed_deliveries_are_listed_with_their_errors(editor_client, email_send):
    failed = email_send.deliveries.first()
    Delivery.objects.filter(pk=failed.pk).update(
        status=Delivery.Status.FAILED, last_error="550 Mailbox unavailable"
    )

    response = editor_client.get(
        reverse("admin:newsletter_delivery_changelist"),
        {"send__id__exact": email_send.pk, "status__exact": "failed"},
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "550 Mailbox unavailable" in html
    assert failed.subscriber.email in html


def test_publish_without_email_publishes_and_sends_nothing(editor_client):
    SubscriberFactory()
    article = ArticleFactory()

    editor_client.post(
        reverse("admin:newsletter_article_changelist"),
        {"action": "publish_without_email", "_selected_action": [article.pk]},
    )

    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    assert article.email_audience == Article.EmailAudience.NOBODY
    assert not EmailSend.objects.exists()


def test_send_a_test_email_to_myself_mails_only_the_editor(editor_client):
    SubscriberFactory()
    article = ArticleFactory(title="Draft thoughts")

    editor_client.post(
        reverse("admin:newsletter_article_changelist"),
        {"action": "send_test_email_to_me", "_selected_action": [article.pk]},
    )

    assert [m.to for m in mail.outbox] == [["editor@example.com"]]
    assert mail.outbox[0].subject == "[Test] Draft thoughts"
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT


def test_send_status_prints_the_progress_of_an_articles_send(email_send):
    Delivery.objects.filter(pk=email_send.deliveries.first().pk).update(
        status=Delivery.Status.FAILED, last_error="550 Unknown user"
    )
    out = StringIO()

    call_command("send_status", "the-straits", stdout=out)

    text = out.getvalue()
    assert "sending, 33.3% done" in text
    assert "recipients 3  pending 2  in flight 0  sent 0  failed 1  skipped 0" in text
    assert "550 Unknown user" in text


def test_send_status_explains_an_article_without_a_send():
    ArticleFactory(slug="quiet")

    with pytest.raises(CommandError, match="no email send"):
        call_command("send_status", "quiet")
