"""What a refused or failed message means for its delivery: retry later, fail it, or
mark the reader bounced; and whether the connection it was sent on is gone."""

import json
import smtplib
from datetime import timedelta

import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused

from newsletter.services.sending import providers, refusals
from newsletter.services.sending.refusals import BOUNCED, PERMANENT, TEMPORARY


def refused_at_recipient(code: int, text: bytes) -> smtplib.SMTPRecipientsRefused:
    return smtplib.SMTPRecipientsRefused({"reader@example.com": (code, text)})


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        # Every 4xx answer is temporary, whatever its enhanced code says.
        (450, b"4.1.1 Mailbox busy", TEMPORARY),
        (499, b"Unknown", TEMPORARY),
        # 500 is the first permanent code: not a mailbox refusal without 5.1.x.
        (500, b"Syntax error", PERMANENT),
        (550, b"5.1.1 User unknown", BOUNCED),
        (550, b"  5.1.1 User unknown", BOUNCED),  # leading blanks before the code
        (550, b"5.1.0 Other address status", BOUNCED),
        (550, b"5.1.6 Mailbox has moved", BOUNCED),
        (550, b"5.1.10 Recipient address has null MX", BOUNCED),
        (550, b"5.2.1 Mailbox disabled", BOUNCED),
        # X.1.7 and X.1.8 are about the sender's address, not the reader's.
        (550, b"5.1.7 Bad sender's mailbox address syntax", PERMANENT),
        (550, b"5.1.8 Bad sender's system address", PERMANENT),
        # Other subjects with the same detail numbers are not about the mailbox.
        (550, b"5.2.2 Mailbox full", PERMANENT),
        (550, b"5.3.1 Mail system full", PERMANENT),
        (550, b"5.7.1 Relay denied", PERMANENT),
        (550, b"5.4.1 No answer from host", PERMANENT),
        # A number that only looks like an enhanced code is not one.
        (554, b"5.11.1 Not a status code", PERMANENT),
        (554, b"5.1.1234 Not a status code", PERMANENT),
        (554, b"Refused: 5.1.1 later in the text", PERMANENT),
        # Without an enhanced code, only 550, 551 and 553 at RCPT TO name the mailbox.
        (550, b"Mailbox unavailable", BOUNCED),
        (551, b"User not local", BOUNCED),
        (553, b"Mailbox name not allowed", BOUNCED),
        (552, b"Exceeded storage allocation", PERMANENT),
        (554, b"Transaction failed", PERMANENT),
    ],
)
def test_a_refused_recipient_is_retried_failed_or_bounced_by_its_code(code, text, kind):
    assert refusals._classify(refused_at_recipient(code, text)) == (
        kind,
        f"{code} {text.decode()}",
    )


def test_the_refusal_of_the_recipient_in_question_is_the_one_read():
    exc = refused_at_recipient(550, b"5.1.1 \xffUnknown")
    kind, error = refusals._classify(exc)
    assert kind == BOUNCED
    assert error == "550 5.1.1 \ufffdUnknown"  # undecodable bytes replaced, not raised


@pytest.mark.parametrize(
    ("exc", "kind", "error"),
    [
        # After the envelope a basic code alone never names a missing mailbox.
        (
            smtplib.SMTPDataError(550, b"Message content rejected"),
            PERMANENT,
            "550 Message content rejected",
        ),
        (smtplib.SMTPDataError(451, b"Try again"), TEMPORARY, "451 Try again"),
        (smtplib.SMTPDataError(550, b"5.1.1 User unknown"), BOUNCED, "550 5.1.1 User unknown"),
        (smtplib.SMTPDataError(554, "5.7.1 Spam"), PERMANENT, "554 5.7.1 Spam"),
        # MAIL FROM refused is the sender's problem, even with an address-status code.
        (
            smtplib.SMTPSenderRefused(553, b"5.1.1 Sender unknown", "news@x.test"),
            PERMANENT,
            "553 5.1.1 Sender unknown",
        ),
        (
            smtplib.SMTPSenderRefused(451, b"4.1.8 Sender domain unresolved", "news@x.test"),
            TEMPORARY,
            "451 4.1.8 Sender domain unresolved",
        ),
        (
            smtplib.SMTPSenderRefused(550, b"5.7.1 Not allowed", "news@x.test"),
            PERMANENT,
            "550 5.7.1 Not allowed",
        ),
    ],
)
def test_a_refusal_after_the_envelope_is_classified_by_its_code_not_blamed_on_the_mailbox(
    exc, kind, error
):
    assert refusals._classify(exc) == (kind, error)


def test_a_recipient_the_provider_refuses_fails_the_message_only():
    exc = AnymailRecipientsRefused("All recipients refused")
    assert refusals._classify(exc) == (PERMANENT, "All recipients refused")


def test_any_other_failure_is_temporary_and_named_by_its_type():
    assert refusals._classify(TimeoutError("timed out")) == (TEMPORARY, "TimeoutError: timed out")
    assert refusals._classify(AnymailAPIError("503 from the API")) == (
        TEMPORARY,
        "AnymailAPIError: 503 from the API",
    )


@pytest.mark.parametrize(
    ("exc", "gone"),
    [
        (refused_at_recipient(421, b"Closing"), True),
        (refused_at_recipient(450, b"Busy"), False),
        (refused_at_recipient(550, b"5.1.1 Unknown"), False),
        (smtplib.SMTPDataError(421, b"Closing"), True),
        (smtplib.SMTPDataError(451, b"Local error"), False),
        (smtplib.SMTPSenderRefused(421, b"Closing", "news@x.test"), True),
        (smtplib.SMTPSenderRefused(550, b"No", "news@x.test"), False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (AnymailAPIError("502 Bad Gateway"), True),
        (AnymailRecipientsRefused("refused"), False),
        (ValueError("a bug, not the network"), False),
    ],
)
def test_only_a_421_or_a_lost_connection_counts_as_the_connection_being_gone(exc, gone):
    assert refusals._is_connection_error(exc) is gone


def test_a_refused_recipient_list_with_a_421_among_others_means_the_connection_is_gone():
    exc = smtplib.SMTPRecipientsRefused(
        {"a@example.com": (550, b"No"), "b@example.com": (421, b"Bye")}
    )
    assert refusals._is_connection_error(exc) is True


def test_retries_wait_one_four_sixteen_and_sixty_four_minutes():
    assert [refusals.retry_delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=1),
        timedelta(minutes=4),
        timedelta(minutes=16),
        timedelta(minutes=64),
    ]
    # Before any attempt (or a counter reset), the first wait.
    assert refusals.retry_delay(0) == timedelta(minutes=1)
    assert refusals.MAX_ATTEMPTS == 5


# --- A provider's batch call refused as a whole -------------------------------------------


def http_response(status: int, body: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.encoding = "utf-8"
    response.reason = "Reason"
    return response


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, TEMPORARY),  # throttled
        (428, PERMANENT),
        (430, PERMANENT),
        (400, PERMANENT),
        (422, PERMANENT),
        (499, PERMANENT),
        (500, TEMPORARY),  # the provider's fault, from the first 5xx
        (503, TEMPORARY),
    ],
)
def test_a_refused_batch_call_is_retried_only_when_throttled_or_the_providers_fault(status, kind):
    exc = AnymailAPIError("refused", status_code=status, response=http_response(status, "{}"))
    assert providers._call_refusal_kind(exc) == kind


def test_a_batch_call_that_got_no_answer_is_retried():
    assert providers._call_refusal_kind(AnymailAPIError("no answer")) == TEMPORARY
    # Not an API answer at all (a status code notwithstanding): retried too.
    assert providers._call_refusal_kind(AnymailError("odd", status_code=400)) == TEMPORARY


def test_a_refused_calls_error_is_the_providers_answer_cut_to_200_characters():
    long_message = "x" * 300
    as_json = http_response(422, json.dumps({"Message": long_message}))
    error = providers._short(AnymailAPIError("refused", status_code=422, response=as_json))
    assert error == "HTTP 422 " + json.dumps({"Message": long_message})[:200]

    as_text = http_response(502, "Bad gateway " + "y" * 300)
    error = providers._short(AnymailAPIError("refused", status_code=502, response=as_text))
    assert error == "HTTP 502 " + ("Bad gateway " + "y" * 300)[:200]


def test_a_call_without_an_answer_is_named_by_its_error_cut_to_200_characters():
    error = providers._short(AnymailAPIError("z" * 300))
    assert error == "AnymailAPIError: " + "z" * 200


def test_a_reply_after_the_envelope_with_undecodable_bytes_is_recorded_not_raised():
    kind, error = refusals._classify(smtplib.SMTPDataError(554, b"5.7.1 \xffRejected"))
    assert (kind, error) == (PERMANENT, "554 5.7.1 \ufffdRejected")
