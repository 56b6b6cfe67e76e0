"""Every email over plain SMTP: one sender, the right MAIL FROM options, a DKIM signature.

The publication is "The Meridian Letter, Lisbon" (a comma in the sender name), the
server is aiosmtpd (tests/fakes/smtp.py) offering 8BITMIME or not, and every signature
is checked by dkimpy's verifier against the DNS record `manage.py dkim_key` printed.
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr
from io import StringIO
from pathlib import Path

import dkim
import dkim.util
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.mail import dkim_aligned, send_bytes
from newsletter.checks import check_dkim
from newsletter.models import Comment
from newsletter.services import comments as comment_service
from newsletter.services.publishing import publish_article
from publication.emails import send_transactional_email
from publication.models import Publication
from subscriptions.models import Membership, Subscriber
from subscriptions.services.signup import send_confirmation_email, send_welcome_email
from tests.factories import (
    ArticleFactory,
    AuthorFactory,
    CommentFactory,
    MembershipFactory,
    StaffUserFactory,
    SubscriberFactory,
)
from tests.fakes.smtp import CapturedMessage, FakeSMTPServer

pytestmark = pytest.mark.django_db

NAME = "The Meridian Letter, Lisbon"
SIGNED = {b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
          b"list-unsubscribe", b"list-unsubscribe-post"}  # fmt: skip


@pytest.fixture(scope="module")
def dkim_key_file(tmp_path_factory) -> tuple[Path, bytes]:
    """A key made by `manage.py dkim_key`, and the TXT record it printed."""
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    out = StringIO()
    call_command("dkim_key", domain="meridian.example", selector="s2026", output=path, stdout=out)
    line = next(x for x in out.getvalue().splitlines() if " IN TXT " in x)
    assert line.startswith("s2026._domainkey.meridian.example. IN TXT ")
    record = "".join(re.findall(r'"([^"]*)"', line))
    return path, record.encode()


@pytest.fixture
def signing(settings, dkim_key_file):
    path, record = dkim_key_file
    settings.EMAIL_DKIM_DOMAIN = "meridian.example"
    settings.EMAIL_DKIM_SELECTOR = "s2026"
    settings.EMAIL_DKIM_PRIVATE_KEY_FILE = str(path)
    return record


@pytest.fixture
def meridian() -> Publication:
    publication = Publication.load()
    publication.name = NAME
    publication.sender_name = NAME
    publication.sender_email = "letters@meridian.example"
    publication.reply_to_email = "editor@meridian.example"
    publication.comment_digest_enabled = True
    publication.save()
    return publication


def smtp_settings(settings, server: FakeSMTPServer) -> None:
    settings.EMAIL_BACKEND = "config.mail.EmailBackend"
    settings.EMAIL_HOST = server.host
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""


@pytest.fixture(params=[True, False], ids=["8bitmime-offered", "7bit-only-server"])
def smtp(request, settings):
    server = FakeSMTPServer(offer_8bitmime=request.param).start()
    smtp_settings(settings, server)
    yield server
    server.stop()


def parsed(captured: CapturedMessage) -> EmailMessage:
    message = email.message_from_bytes(captured.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_sent_properly(
    captured: CapturedMessage, *, server: FakeSMTPServer, record: bytes
) -> EmailMessage:
    """One sender, the sender's envelope and domain, right options, a valid signature."""
    message = parsed(captured)
    assert not message.defects
    assert captured.mail_from == "letters@meridian.example"
    (sender,) = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (NAME, "letters@meridian.example")
    assert message["Message-ID"].endswith("@meridian.example>"), message["Message-ID"]
    assert message["Date"].endswith("+0000")
    assert max(len(line) for line in captured.data.split(b"\r\n")) <= 998
    if server.offer_8bitmime:
        assert ("BODY=8BITMIME" in captured.mail_options) == (not captured.data.isascii())
    else:
        assert captured.data.isascii()
        assert not any(o.startswith("BODY=") for o in captured.mail_options)
    assert "SMTPUTF8" not in captured.mail_options
    assert dkim.verify(captured.data, dnsfunc=lambda name, timeout=5: record)
    assert signed_headers(message) >= SIGNED
    return message


def signed_headers(message: EmailMessage) -> set[bytes]:
    """The h= tag of the message's DKIM-Signature: the headers it covers."""
    tags = dkim.util.parse_tag_value(re.sub(r"\s", "", str(message["DKIM-Signature"])).encode())
    return {name.lower() for name in tags[b"h"].split(b":")}


def text_of(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_a_newsletter_goes_out_from_one_sender_signed_with_the_right_body_option(
    meridian, smtp, signing, django_capture_on_commit_callbacks
):
    SubscriberFactory(email="zoe@example.com", name="Zoë =E2=82=AC Li")
    SubscriberFactory(email="ada@example.com", name="Ada")
    article = ArticleFactory(
        title="Maré alta", body="<p>" + "潮汐表" * 400 + "</p><p>Ondas, marés e ventos.</p>"
    )

    with django_capture_on_commit_callbacks(execute=True):
        result = publish_article(article=article)

    assert smtp.wait_for(2)
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == [
        "ada@example.com",
        "zoe@example.com",
    ]
    for captured in smtp.messages:
        message = assert_sent_properly(captured, server=smtp, record=signing)
        assert message["List-Id"] == f'"{NAME}" <the-meridian-letter-lisbon.meridian.example>'
        assert re.fullmatch(
            rf"{result.email_send.pk}:(free|paid):the-meridian-letter-lisbon:broadside",
            message["Feedback-ID"],
        )
        assert message["Reply-To"] == "editor@meridian.example"
        text, html = text_of(message)
        assert "潮汐表" * 20 in text.replace("\n", "") and "Ondas, marés" in html
    zoe = next(parsed(m) for m in smtp.messages if m.rcpt_tos == ("zoe@example.com",))
    assert "Hi Zoë =E2=82=AC Li," in text_of(zoe)[0]
    assert "Hi Zoë =E2=82=AC Li," in text_of(zoe)[1]


def transactional_sends() -> dict[str, object]:
    """Every transactional email the site sends, each by its own code path."""

    def confirmation() -> None:
        subscriber = SubscriberFactory(email="reader@example.com", status="pending")
        assert send_confirmation_email(subscriber_id=subscriber.pk)

    def welcome() -> None:
        subscriber = SubscriberFactory(email="reader@example.com")
        assert send_welcome_email(subscriber_id=subscriber.pk)

    def donation_thanks() -> None:
        donation = type("Donation", (), {"recurring": True, "message": "Obrigada!"})()
        send_transactional_email(
            to="reader@example.com",
            subject="Thank you for your support",
            template="donation_thanks",
            context={"donation": donation, "amount": "€5.00", "billing_url": "http://t/b/"},
        )

    def payment_failed() -> None:
        send_transactional_email(
            to="reader@example.com",
            subject="Your payment did not go through",
            template="payment_failed",
            context={"amount": "€5.00", "billing_url": "http://testserver/account/billing/"},
        )

    def membership_reminder() -> None:
        membership = MembershipFactory.build(
            kind=Membership.Kind.COMP,
            expires_at=timezone.now() + timedelta(days=3),
        )
        send_transactional_email(
            to="reader@example.com",
            subject="Your membership ends soon",
            template="membership_reminder",
            context={"membership": membership, "upgrade_url": "http://testserver/upgrade/"},
        )

    def dispute_alert() -> None:
        send_transactional_email(
            to="reader@example.com",
            subject="A payment of €5.00 is disputed",
            template="dispute_alert",
            context={"dispute": {"reason": "fraudulent"}, "amount": "€5.00", "admin_url": "x"},
        )

    def comment_digest() -> None:
        author = AuthorFactory(user=StaffUserFactory(email="reader@example.com"))
        article = ArticleFactory()
        article.authors.add(author)
        CommentFactory(article=article, body="Muito bom")
        assert comment_service.send_comment_digests() == 1
        assert Comment.objects.filter(authors_notified_at__isnull=False).exists()

    def sign_in_code() -> None:
        SubscriberFactory(email="reader@example.com", status=Subscriber.Status.ACTIVE)
        response = Client().post("/accounts/login/code/", {"email": "reader@example.com"})
        assert response.status_code == 302

    return {f.__name__: f for f in (confirmation, welcome, donation_thanks, payment_failed,
            membership_reminder, dispute_alert, comment_digest, sign_in_code)}  # fmt: skip


@pytest.mark.parametrize("kind", list(transactional_sends()))
def test_every_transactional_email_goes_out_from_one_sender_and_signed(
    kind, meridian, smtp, signing
):
    transactional_sends()[kind]()  # type: ignore[operator]

    assert smtp.wait_for(1)
    (captured,) = smtp.messages
    assert captured.rcpt_tos == ("reader@example.com",)
    message = assert_sent_properly(captured, server=smtp, record=signing)
    assert message["Reply-To"] == "editor@meridian.example"
    text, html = text_of(message)
    assert NAME in text and NAME in html
    assert "127.0.0.1:8000" not in text + html
    assert 'role="presentation"' in html


def test_the_sign_in_code_email_has_a_proper_subject_and_the_publications_name(
    meridian, mailoutbox
):
    SubscriberFactory(email="reader@example.com", status=Subscriber.Status.ACTIVE)

    Client().post("/accounts/login/code/", {"email": "reader@example.com"})

    (message,) = mailoutbox
    code = re.search(r"^([A-Z0-9]{4}-[A-Z0-9]{4})$", message.body, re.M)
    assert code, message.body
    assert message.subject == f"Your sign-in code is {code.group(1)} · {NAME}"
    assert message.from_email == f'"{NAME}" <letters@meridian.example>'
    assert message.reply_to == ["editor@meridian.example"]
    assert f"Your code to sign in to {NAME}:" in message.body
    html = message.alternatives[0][0]
    assert code.group(1) in html and "Your sign-in code is" in html  # the preheader
    assert "mso-hide: all" in html


@pytest.mark.parametrize(
    ("recipient", "offered", "expect"),
    [
        ("ascii@example.com", True, ()),
        ("zoë@example.com", True, ("SMTPUTF8",)),
        ("ascii@bücher.example", False, ()),  # the domain goes out in IDNA
    ],
)
def test_smtputf8_is_asked_for_only_when_an_address_needs_it(recipient, offered, expect):
    with FakeSMTPServer(offer_smtputf8=offered) as server:
        with smtplib.SMTP(server.host, server.port) as client:
            client.ehlo()
            send_bytes(
                client,
                sender="letters@meridian.example",
                recipients=[recipient],
                data=b"From: letters@meridian.example\r\nSubject: x\r\n\r\nhello\r\n",
            )
        assert server.wait_for(1)
    (captured,) = server.messages
    assert tuple(o for o in captured.mail_options if o == "SMTPUTF8") == expect
    assert captured.rcpt_tos[0].endswith(("@example.com", "@xn--bcher-kva.example"))


def test_an_address_that_needs_smtputf8_is_refused_by_a_server_without_it():
    with (
        FakeSMTPServer(offer_smtputf8=False) as server,
        smtplib.SMTP(server.host, server.port) as client,
    ):
        client.ehlo()
        with pytest.raises(smtplib.SMTPNotSupportedError):
            send_bytes(
                client,
                sender="letters@meridian.example",
                recipients=["zoë@example.com"],
                data=b"Subject: x\r\n\r\nhello\r\n",
            )
    assert server.messages == []


def test_the_check_warns_when_the_signing_domain_does_not_match_the_sender(
    meridian, signing, settings
):
    assert check_dkim() == []

    settings.EMAIL_DKIM_DOMAIN = "other.example"

    warnings = [m for m in check_dkim() if m.id == "newsletter.W101"]
    assert any("letters@meridian.example" in m.msg for m in warnings)


def test_the_check_accepts_a_sender_under_the_signing_domain_and_refuses_a_missing_key(
    settings, signing
):
    assert dkim_aligned(from_domain="news.meridian.example", signing_domain="meridian.example")
    assert not dkim_aligned(from_domain="meridian.example.evil", signing_domain="meridian.example")
    settings.EMAIL_DKIM_PRIVATE_KEY_FILE = ""
    settings.EMAIL_DKIM_PRIVATE_KEY = ""

    assert [m.id for m in check_dkim()] == ["newsletter.E101"]


def test_nothing_is_signed_while_dkim_is_not_configured(meridian, settings):
    with FakeSMTPServer() as server:
        smtp_settings(settings, server)
        send_transactional_email(
            to="reader@example.com", subject="Hello", template="payment_failed", context={}
        )
        assert server.wait_for(1)
    assert b"DKIM-Signature" not in server.messages[0].data


@pytest.mark.parametrize("backend", ["file", "smtp"])
def test_a_confirmation_from_a_sender_with_a_comma_is_well_formed_on_either_backend(
    backend, meridian, settings, tmp_path
):
    """The embedded default writes emails to files; production speaks SMTP."""
    subscriber = SubscriberFactory(email="reader@example.com", status="pending")
    with FakeSMTPServer() as server:
        if backend == "smtp":
            smtp_settings(settings, server)
        else:
            settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
            settings.EMAIL_FILE_PATH = str(tmp_path)

        assert send_confirmation_email(subscriber_id=subscriber.pk)

        if backend == "smtp":
            assert server.wait_for(1)
            data = server.messages[0].data
        else:
            (written,) = tmp_path.iterdir()
            data = written.read_bytes().rpartition(b"\n" + b"-" * 79)[0]
    message = email.message_from_bytes(data, policy=email.policy.default)
    (sender,) = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (NAME, "letters@meridian.example")
    assert message["Message-ID"].endswith("@meridian.example>")
    assert message["Date"].endswith("+0000")
    assert [a.addr_spec for a in message["Reply-To"].addresses] == ["editor@meridian.example"]


def test_the_first_message_on_a_new_connection_goes_as_8bit_to_a_server_offering_8bitmime(
    settings,
):
    from django.core.mail import EmailMessage as DjangoEmailMessage
    from django.core.mail import get_connection

    with FakeSMTPServer(offer_8bitmime=True) as server:
        smtp_settings(settings, server)
        with get_connection() as connection:
            for n in range(2):
                DjangoEmailMessage(
                    subject="Olá",
                    body=f"Caro leitor nº {n}: a edição de hoje já saiu. " * 3,
                    from_email="Désk <letters@meridian.example>",
                    to=["reader@example.com"],
                    connection=connection,
                ).send()
        assert server.wait_for(2)
    for captured in server.messages:
        assert "BODY=8BITMIME" in captured.mail_options, captured.mail_options
        assert not captured.data.isascii()
        (text,) = [p for p in parsed(captured).walk() if p.get_content_maintype() == "text"]
        assert text["Content-Transfer-Encoding"] == "8bit"
        assert "nº" in text.get_content()


_header_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=60
)
_body_line = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\r\n"),
    max_size=120,
)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_header_text,
    name=_header_text,
    lines=st.lists(_body_line, max_size=12),
    trailing=st.sampled_from(["", "\n", "\n\n\n", "  \n\t\n"]),
)
@example(subject="Weekly", name='The "Meridian" \\ Letters', lines=["Hello"], trailing="")
@example(subject="0", name='00000"\xa0[\xa0\xa0', lines=[], trailing="")  # a quote in the name
def test_a_signature_made_with_cryptography_is_one_dkimpy_verifies(
    dkim_key_file, subject, name, lines, trailing
):
    from config.mail import _dkim_key, dkim_sign

    path, record = dkim_key_file
    key = _dkim_key("meridian.example", "s2026", "", str(path))
    message = EmailMessage()
    # As the app writes it (formataddr): a display name pasted between quotes by hand
    # breaks on a name with a quote in it (Python folds it into an invalid header).
    message["From"] = formataddr((name, "letters@meridian.example"))
    message["To"] = "reader@example.com"
    message["Subject"] = subject
    message["List-Unsubscribe"] = "<https://meridian.example/u/x>"
    message.set_content("\n".join(lines) + trailing)
    data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))

    signed = dkim_sign(data, key=key)

    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    # And the signature covers what it says: another unsubscribe link breaks it.
    tampered = signed.replace(b"/u/x>", b"/u/y>")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)
