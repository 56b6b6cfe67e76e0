"""Generated deliveries: the webhook's verdicts on signatures are stripe-python's own, and
whatever a signed body holds, the answer is a 200 with the event stored once or a 400
with nothing stored, never an error. Runs on either database (DATABASE_URL)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from unittest import mock

import pytest
import stripe  # the real checker the verdicts are compared with
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from subscriptions import stripe_client
from subscriptions.models import StripeEvent
from tests.subscriptions.stripe_support import WEBHOOK_URL

pytestmark = pytest.mark.django_db

SECRET = "whsec_generated_0123456789"
NOW = 1_900_000_000
TOLERANCE = stripe_client.WEBHOOK_TOLERANCE_SECONDS

examples = hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return SECRET


def sign(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


# Around the edges of the tolerance (a signature exactly TOLERANCE seconds old is still
# good), far in the past and in the future.
timestamps = st.one_of(
    st.integers(NOW - TOLERANCE - 2, NOW - TOLERANCE + 2),
    st.integers(NOW - 10, NOW + 10),
    st.integers(0, NOW * 2),
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4).map(
        lambda value: json.dumps(value).encode()
    ),
)


@st.composite
def headers(draw, body: bytes) -> str | None:
    """Stripe-Signature headers as Stripe sends them and as they get mangled: several v1
    signatures (one right, or none), other schemes, a missing or repeated t, spaces,
    empty and malformed items."""
    timestamp = draw(timestamps)
    right = sign(body, timestamp)
    item = st.one_of(
        st.just(f"t={timestamp}"),
        st.just(f"v1={right}"),
        st.just(f"v1={right.upper()}"),
        st.just(f"v1={sign(body, timestamp, 'whsec_someone_else')}"),
        st.just(f"v1={sign(body, timestamp + 1)}"),
        st.just(f"v0={right}"),
        st.just(f"t={draw(timestamps)}"),
        st.text(alphabet="tv01=, abcdef", max_size=12),
    )
    items = draw(st.lists(item, max_size=5))
    if draw(st.booleans()):
        items = [f"t={timestamp}", *items]
    spaced = draw(st.sampled_from([",", ", ", " ,"]))
    header = spaced.join(items)
    if draw(st.booleans()):
        header = f" {header} "
    return header if header or draw(st.booleans()) else None


def stripes_verdict(body: bytes, header: str | None) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, SECRET, TOLERANCE)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        return False
    return True


def ours(body: bytes, header: str | None) -> bool:
    try:
        stripe_client.verify_webhook(payload=body, signature_header=header)
    except stripe_client.WebhookSignatureError:
        return False
    return True


@examples
@given(data=st.data(), body=bodies)
def test_a_signature_is_accepted_exactly_when_stripe_python_accepts_it(secret, data, body):
    header = data.draw(headers(body))
    with mock.patch("time.time", return_value=float(NOW)):
        assert ours(body, header) == stripes_verdict(body, header)


@pytest.mark.parametrize(
    ("age", "accepted"),
    [(0, True), (TOLERANCE - 1, True), (TOLERANCE, True), (TOLERANCE + 1, False)],
)
def test_a_signature_is_good_for_the_tolerance_and_not_a_second_more(secret, age, accepted):
    body = b'{"id": "evt_1"}'
    header = f"t={NOW - age},v1={sign(body, NOW - age)}"
    with mock.patch("time.time", return_value=float(NOW)):
        assert ours(body, header) is accepted
        assert stripes_verdict(body, header) is accepted


# --- Any signed body: a 200 and one row, or a 400 and none --------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    # JSON numbers are decimals in PostgreSQL: a float of 17 digits is read back as the
    # same float only within this range. NaN and Infinity are not JSON (refused).
    | st.floats(min_value=-1e15, max_value=1e15)
    | st.sampled_from([float("nan"), float("inf"), float("-inf")])
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def events(draw) -> dict:
    """Stripe events, most well formed, some with a field of the wrong type or missing."""
    event = {
        "id": draw(st.text(min_size=1, max_size=120)),
        "object": "event",
        "type": draw(st.text(min_size=1, max_size=120)),
        "created": draw(st.one_of(st.integers(0, 4_000_000_000), st.integers(), st.just(NOW))),
        "livemode": draw(st.booleans()),
        "data": {
            "object": draw(
                st.one_of(
                    st.fixed_dictionaries(
                        {"id": st.text(max_size=300)}, optional={"x": json_values}
                    ),
                    json_values,
                )
            )
        },
    }
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(sorted(event)))
        if draw(st.booleans()):
            del event[field]
        else:
            event[field] = draw(json_values)
    return event


signed_bodies = st.one_of(
    events().map(lambda event: json.dumps(event).encode()),
    events().map(lambda event: json.dumps(event, ensure_ascii=False).encode()),
    st.binary(max_size=100),
    st.text(max_size=100).map(str.encode),
)


@examples
@given(body=signed_bodies, redeliveries=st.integers(0, 2))
def test_any_signed_body_is_stored_once_or_refused_with_nothing_stored(secret, body, redeliveries):
    StripeEvent.objects.all().delete()  # one example's rows are not the next one's
    client = Client()
    statuses = []
    for _ in range(1 + redeliveries):
        header = f"t={int(time.time())},v1={sign(body, int(time.time()))}"
        response = client.post(
            WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )
        statuses.append(response.status_code)

    assert statuses in ([200] * len(statuses), [400] * len(statuses))
    if statuses[0] == 400:
        assert "error" in response.json()
        assert not StripeEvent.objects.exists()
        return
    # U+0000 is taken out (PostgreSQL's jsonb cannot hold it), before the checks.
    event = _without_nul(json.loads(body))
    stored = StripeEvent.objects.get()
    assert stored.stripe_id == event["id"][:100]
    assert stored.type == event["type"][:100]
    assert stored.created.timestamp() == (event["created"] or stored.received_at.timestamp())
    assert stored.payload == event
    assert stored.object_id == StripeEvent.object_id_in(event)
    assert (stored.processed_at, stored.attempts, stored.error) == (None, 0, "")


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


@pytest.mark.parametrize(
    "oddity",
    [
        '"created": 1000000000000',  # beyond datetime's calendar
        '"created": 1900000000, "amount": NaN',
        '"created": 1900000000, "amount": Infinity',
        '"created": 1900000000, "amount": -Infinity',
        '"created": 1900000000, "name": "\\ud800"',  # half a surrogate pair
        '"created": 1900000000, "name": "\\uDFFF!"',
    ],
)
def test_a_signed_body_postgresql_could_not_store_is_refused_not_an_error(secret, oddity):
    body = (
        '{"id": "evt_odd", "object": "event", "type": "t", "data": {}, ' + oddity + "}"
    ).encode()
    header = f"t={int(time.time())},v1={sign(body, int(time.time()))}"

    response = Client().post(
        WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_delivery_of_two_dozen_distinct_events_with_redeliveries_stores_each_once(secret):
    client = Client()
    ids = [f"evt_{n}" for n in range(24)]
    for stripe_id in [*ids, *ids[::3], *ids[::5]]:
        body = json.dumps(
            {"id": stripe_id, "object": "event", "type": "t", "created": NOW, "data": {}}
        ).encode()
        header = f"t={int(time.time())},v1={sign(body, int(time.time()))}"
        response = client.post(
            WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )
        assert response.status_code == 200
    assert sorted(StripeEvent.objects.values_list("stripe_id", flat=True)) == sorted(ids)
