"""A local stand-in for the parts of Stripe's API that Broadside uses.

A real HTTP server on 127.0.0.1 (an ephemeral port) that the stripe library talks to
when STRIPE_API_BASE points at it. It keeps customers, checkout sessions, portal
sessions, subscriptions, invoices, charges, products and prices in memory, answers in
Stripe's JSON shapes (API version 2025+: a subscription's period lives on its items, an
invoice names its subscription under `parent.subscription_details`), honours
idempotency keys, and records every request so tests can assert what was sent.

    with FakeStripeAPI() as stripe_api:          # or .start() / .stop()
        settings.STRIPE_API_BASE = stripe_api.url
        ...
        session = stripe_api.complete_checkout(session_id)   # as if the reader paid
        event = stripe_api.event("checkout.session.completed", session)

It also serves a tiny checkout page at each session's `url` with a "Pay" button, which
completes the session, delivers the signed webhooks Stripe would send (when
`webhook_url` and `webhook_secret` are set) and redirects to the session's success_url,
so browser tests can walk the whole flow.
"""

from __future__ import annotations

import copy
import html
import itertools
import json
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.base import LocalHTTPServer

API_VERSION = "2026-10-28.endive"


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class HeldRequest:
    method: str
    path: str
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path == self.path


class StripeAPIError(Exception):
    def __init__(self, status: int, message: str, code: str = "resource_missing"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=1`) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists_from_index_dicts(root)


def _lists_from_index_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _lists_from_index_dicts(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


@dataclass
class _Store:
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        return obj

    def get(self, kind: str, object_id: str) -> dict[str, Any]:
        try:
            return self.objects[kind][object_id]
        except KeyError:
            raise StripeAPIError(404, f"No such {kind}: '{object_id}'") from None

    def all(self, kind: str) -> list[dict[str, Any]]:
        return list(self.objects.get(kind, {}).values())


class FakeStripeAPI(LocalHTTPServer):
    thread_name = "fake-stripe-api"

    def __init__(self, *, webhook_url: str = "", webhook_secret: str = "") -> None:
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.requests: list[RecordedRequest] = []
        self.delivered_events: list[dict[str, Any]] = []
        self._store = _Store()
        self._idempotent: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._holds: list[HeldRequest] = []

    # --- the HTTP server ---------------------------------------------------------------

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    # --- what tests look at ------------------------------------------------------------

    def hold_next(self, method: str, path: str) -> HeldRequest:
        """Answer the next `method` request for `path` as things stand when it arrives,
        but only once the test sets the returned hold's `release` (a slow network)."""
        hold = HeldRequest(method=method, path=path)
        with self._lock:
            self._holds.append(hold)
        return hold

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path starts with `path`."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path)]

    def get(self, kind: str, object_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._store.get(kind, object_id))

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._store.all(kind))

    # --- preloading and driving state, as Stripe's dashboard or a payment would -------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_test{next(self._ids):06d}"

    def add_customer(
        self,
        *,
        email: str,
        name: str = "",
        metadata: dict[str, str] | None = None,
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            customer = self._customer(email, name, metadata or {})
            if customer_id:
                customer["id"] = customer_id
            return copy.deepcopy(self._store.put("customer", customer))

    def delete_customer(self, customer_id: str) -> None:
        """Delete a customer as Stripe does: retrieving it then answers `deleted: true`."""
        with self._lock:
            self._store.get("customer", customer_id)
            self._store.put("customer", {"id": customer_id, "object": "customer", "deleted": True})

    def add_product(self, *, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._store.put("product", self._product(name, {})))

    def add_price(
        self,
        *,
        unit_amount: int,
        currency: str = "usd",
        interval: str | None = "month",
        product: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            if product is None:
                product = self._store.put("product", self._product("Membership", {}))["id"]
            price = self._price(product, unit_amount, currency, interval, {})
            return copy.deepcopy(self._store.put("price", price))

    def add_subscription(
        self,
        *,
        customer: str,
        price: str,
        status: str = "active",
        metadata: dict[str, str] | None = None,
        period_days: int = 30,
    ) -> dict[str, Any]:
        with self._lock:
            sub = self._subscription(customer, self._store.get("price", price), metadata or {})
            sub["status"] = status
            item = sub["items"]["data"][0]
            item["current_period_end"] = item["current_period_start"] + period_days * 86400
            return copy.deepcopy(self._store.put("subscription", sub))

    def update_subscription(self, subscription_id: str, **changes: Any) -> dict[str, Any]:
        """Change a subscription as Stripe would (status, cancel_at_period_end, ...)."""
        with self._lock:
            sub = self._store.get("subscription", subscription_id)
            period_end = changes.pop("current_period_end", None)
            if period_end is not None:
                for item in sub["items"]["data"]:
                    item["current_period_end"] = int(period_end)
            sub.update(changes)
            if changes.get("status") == "canceled":
                now = int(time.time())
                sub["canceled_at"] = sub.get("canceled_at") or now
                sub["ended_at"] = sub.get("ended_at") or now
            return copy.deepcopy(sub)

    def complete_checkout(
        self, session_id: str, *, email: str = "payer@example.com", name: str = ""
    ) -> dict[str, Any]:
        """The payer finished Checkout: create what Stripe creates and mark it complete."""
        with self._lock:
            session = self._store.get("checkout.session", session_id)
            if session["status"] == "complete":
                return copy.deepcopy(session)
            if session["customer"]:
                customer = self._store.get("customer", session["customer"])
            else:
                email = session.get("customer_email") or email
                customer = self._store.put(
                    "customer", self._customer(email, name, {"created_by": "checkout"})
                )
                session["customer"] = customer["id"]
            session["customer_details"] = {"email": customer["email"], "name": name or None}
            session["status"] = "complete"
            session["payment_status"] = "paid"
            line = session["_line_items"][0]
            if session["mode"] == "subscription":
                sub = self._subscription(
                    customer["id"], line["price"], session["_subscription_metadata"]
                )
                sub["items"]["data"][0]["quantity"] = line["quantity"]
                sub["status"] = "active"
                trial_days = session["_trial_period_days"]
                if trial_days:
                    now = int(time.time())
                    sub["status"] = "trialing"
                    sub["trial_start"], sub["trial_end"] = now, now + trial_days * 86400
                    sub["items"]["data"][0]["current_period_end"] = sub["trial_end"]
                for promotion_id in session["_promotion_codes"]:
                    sub["discounts"].append(self._discount(promotion_id, sub))
                self._store.put("subscription", sub)
                invoice = self._invoice(sub, billing_reason="subscription_create")
                sub["latest_invoice"] = invoice["id"]
                session["subscription"] = sub["id"]
                session["invoice"] = invoice["id"]
            else:
                intent_id = self.new_id("pi")
                session["payment_intent"] = intent_id
                self._charge(customer, session["amount_total"], session["currency"], intent_id)
            return copy.deepcopy(session)

    def renew_subscription(self, subscription_id: str) -> dict[str, Any]:
        """A new period was paid: a new invoice, the period moved on."""
        with self._lock:
            sub = self._store.get("subscription", subscription_id)
            _start_next_period(sub)
            sub["status"] = "active"
            invoice = self._invoice(sub, billing_reason="subscription_cycle")
            sub["latest_invoice"] = invoice["id"]
            return copy.deepcopy(invoice)

    def end_trial(self, subscription_id: str, *, outcome: str = "paid") -> dict[str, Any]:
        """The trial is over: `paid` (first charge taken, active), `failed` (past_due,
        an open invoice) or `canceled` (no card, Stripe ends it). Returns the invoice,
        or the subscription when canceled."""
        with self._lock:
            sub = self._store.get("subscription", subscription_id)
            now = int(time.time())
            sub["trial_end"] = min(sub.get("trial_end") or now, now)
            if outcome == "canceled":
                sub["status"] = "canceled"
                sub["canceled_at"] = sub["ended_at"] = now
                return copy.deepcopy(sub)
            item = sub["items"]["data"][0]
            interval = (item["price"].get("recurring") or {}).get("interval", "month")
            item["current_period_start"] = now
            item["current_period_end"] = now + (365 if interval == "year" else 30) * 86400
            sub["status"] = "active" if outcome == "paid" else "past_due"
            invoice = self._invoice(
                sub, billing_reason="subscription_cycle", paid=outcome == "paid"
            )
            sub["latest_invoice"] = invoice["id"]
            return copy.deepcopy(invoice)

    def set_promotion_code(self, promotion_code_id: str, *, active: bool) -> dict[str, Any]:
        """Deactivate (or reactivate) a promotion code, as in Stripe's dashboard."""
        with self._lock:
            promotion = self._store.get("promotion_code", promotion_code_id)
            promotion["active"] = active
            return copy.deepcopy(promotion)

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription as a webhook's snapshot carries it (discounts as ids)."""
        with self._lock:
            return _expanded(self._store.get("subscription", subscription_id), {})

    def fail_invoice(self, subscription_id: str) -> dict[str, Any]:
        """A renewal payment failed: the new period started (Stripe moves it on when it
        bills, paid or not), an open invoice, the subscription past_due."""
        with self._lock:
            sub = self._store.get("subscription", subscription_id)
            _start_next_period(sub)
            sub["status"] = "past_due"
            invoice = self._invoice(sub, billing_reason="subscription_cycle", paid=False)
            sub["latest_invoice"] = invoice["id"]
            return copy.deepcopy(invoice)

    def refund_charge(self, *, payment_intent: str) -> dict[str, Any]:
        with self._lock:
            for charge in self._store.all("charge"):
                if charge["payment_intent"] == payment_intent:
                    charge["refunded"] = True
                    charge["amount_refunded"] = charge["amount"]
                    return copy.deepcopy(charge)
        raise KeyError(payment_intent)

    def event(
        self, event_type: str, obj: dict[str, Any], *, created: int | None = None
    ) -> dict[str, Any]:
        """A webhook event wrapping a snapshot of `obj`, shaped as Stripe sends it."""
        return {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created if created is not None else int(time.time()),
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy.deepcopy(obj)},
        }

    def deliver(self, event: dict[str, Any]) -> int:
        """POST a signed event to webhook_url, as Stripe does; returns the status code."""
        import stripe  # the library's own signing scheme

        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, self.webhook_secret)
        request = urllib.request.Request(
            self.webhook_url,
            data=body.encode(),
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            self.delivered_events.append(event)
            return response.status

    # --- object shapes -----------------------------------------------------------------

    def _customer(self, email: str, name: str, metadata: dict[str, str]) -> dict[str, Any]:
        return {
            "id": self.new_id("cus"),
            "object": "customer",
            "email": email,
            "name": name or None,
            "metadata": metadata,
            "created": int(time.time()),
            "livemode": False,
        }

    def _product(self, name: str, metadata: dict[str, str]) -> dict[str, Any]:
        return {
            "id": self.new_id("prod"),
            "object": "product",
            "name": name,
            "active": True,
            "metadata": metadata,
            "created": int(time.time()),
        }

    def _price(
        self,
        product: str,
        unit_amount: int,
        currency: str,
        interval: str | None,
        metadata: dict[str, str],
    ) -> dict[str, Any]:
        return {
            "id": self.new_id("price"),
            "object": "price",
            "product": product,
            "unit_amount": int(unit_amount),
            "currency": currency,
            "active": True,
            "type": "recurring" if interval else "one_time",
            "recurring": {"interval": interval, "interval_count": 1} if interval else None,
            "metadata": metadata,
            "created": int(time.time()),
        }

    def _subscription(
        self, customer: str, price: dict[str, Any], metadata: dict[str, str]
    ) -> dict[str, Any]:
        now = int(time.time())
        interval = (price.get("recurring") or {}).get("interval", "month")
        length = 365 * 86400 if interval == "year" else 30 * 86400
        sub_id = self.new_id("sub")
        return {
            "id": sub_id,
            "object": "subscription",
            "customer": customer,
            "status": "incomplete",
            "metadata": dict(metadata),
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "ended_at": None,
            "created": now,
            "start_date": now,
            "latest_invoice": None,
            "livemode": False,
            "trial_start": None,
            "trial_end": None,
            "discounts": [],
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": self.new_id("si"),
                        "object": "subscription_item",
                        "subscription": sub_id,
                        "quantity": 1,
                        "price": copy.deepcopy(price),
                        "current_period_start": now,
                        "current_period_end": now + length,
                    }
                ],
                "has_more": False,
            },
        }

    def _invoice(
        self, sub: dict[str, Any], *, billing_reason: str, paid: bool = True
    ) -> dict[str, Any]:
        item = sub["items"]["data"][0]
        price = item["price"]
        customer = self._store.get("customer", sub["customer"])
        intent_id = self.new_id("pi")
        amount = price["unit_amount"] * int(item.get("quantity") or 1)
        for discount in sub.get("discounts") or []:
            if discount["end"] is None or discount["end"] > int(time.time()):
                coupon = discount["source"]["coupon"]
                if coupon.get("percent_off"):
                    amount -= round(amount * coupon["percent_off"] / 100)
                else:
                    amount = max(amount - int(coupon.get("amount_off") or 0), 0)
        if sub["status"] == "trialing":
            amount = 0
        invoice = {
            "id": self.new_id("in"),
            "object": "invoice",
            "customer": sub["customer"],
            "customer_email": customer["email"],
            "status": "paid" if paid else "open",
            "billing_reason": billing_reason,
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "currency": price["currency"],
            "attempt_count": 1,
            "created": int(time.time()),
            "hosted_invoice_url": f"{self.url}/invoice/{sub['id']}",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": sub["id"],
                    "metadata": dict(sub["metadata"]),
                },
            },
            "payments": {
                "object": "list",
                "data": [{"payment": {"type": "payment_intent", "payment_intent": intent_id}}],
            },
        }
        self._store.put("invoice", invoice)
        if paid and amount:
            self._charge(customer, amount, price["currency"], intent_id)
        return invoice

    def _charge(
        self, customer: dict[str, Any], amount: int, currency: str, payment_intent: str
    ) -> dict[str, Any]:
        """The successful charge behind a payment, which a refund later finds."""
        return self._store.put(
            "charge",
            {
                "id": self.new_id("ch"),
                "object": "charge",
                "amount": amount,
                "amount_refunded": 0,
                "refunded": False,
                "currency": currency,
                "customer": customer["id"],
                "payment_intent": payment_intent,
                "billing_details": {"email": customer["email"]},
                "created": int(time.time()),
            },
        )

    # --- HTTP --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        params = decode_form(body if method == "POST" else parts.query)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if parts.path.startswith("/pay/"):
            self._checkout_page(handler, method, parts.path.removeprefix("/pay/"), body)
            return
        record = RecordedRequest(method, parts.path, params, headers)
        with self._lock:
            self.requests.append(record)
        if not headers.get("authorization", "").startswith("Bearer sk_"):
            self._respond(handler, 401, _error(401, "Invalid API Key provided.", "api_key"))
            return
        key = headers.get("idempotency-key")
        if method == "POST" and key and (key, parts.path) in self._idempotent:
            status, payload = self._idempotent[(key, parts.path)]
            self._respond(handler, status, payload)
            return
        try:
            with self._lock:
                status, payload = 200, copy.deepcopy(self._route(method, parts.path, params))
        except StripeAPIError as exc:
            status, payload = exc.status, _error(exc.status, exc.message, exc.code)
        if method == "POST" and key:
            self._idempotent[(key, parts.path)] = (status, payload)
        with self._lock:
            hold = next((h for h in self._holds if h.matches(method, parts.path)), None)
            if hold is not None:
                self._holds.remove(hold)
        if hold is not None:
            # The answer is what the store held on arrival; it leaves when the test says.
            hold.arrived.set()
            hold.release.wait(timeout=30)
        self._respond(handler, status, payload)

    def _respond(self, handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Request-Id", f"req_{next(self._ids)}")
        handler.end_headers()
        handler.wfile.write(body)

    def _route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        segments = path.strip("/").split("/")
        if segments[0] != "v1":
            raise StripeAPIError(404, f"Unrecognized request URL ({method}: {path}).")
        resource = "/".join(segments[1:])
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"customers", self._create_customer),
            ("GET", r"customers/(?P<id>[^/]+)", lambda p, id: self._store.get("customer", id)),
            ("POST", r"checkout/sessions", self._create_checkout_session),
            ("GET", r"checkout/sessions/(?P<id>[^/]+)", self._retrieve_checkout_session),
            ("POST", r"billing_portal/sessions", self._create_portal_session),
            ("GET", r"subscriptions", self._list_subscriptions),
            ("GET", r"subscriptions/(?P<id>[^/]+)", self._retrieve_subscription),
            ("POST", r"subscriptions/(?P<id>[^/]+)", self._update_subscription),
            ("DELETE", r"subscriptions/(?P<id>[^/]+)", self._cancel_subscription),
            ("GET", r"invoices/(?P<id>[^/]+)", lambda p, id: self._store.get("invoice", id)),
            ("POST", r"products", self._create_product),
            ("GET", r"products/(?P<id>[^/]+)", lambda p, id: self._store.get("product", id)),
            ("POST", r"prices", self._create_price),
            ("GET", r"prices/(?P<id>[^/]+)", lambda p, id: self._store.get("price", id)),
            ("GET", r"prices", self._list_prices),
            ("POST", r"coupons", self._create_coupon),
            ("GET", r"coupons/(?P<id>[^/]+)", lambda p, id: self._store.get("coupon", id)),
            ("POST", r"promotion_codes", self._create_promotion_code),
            ("GET", r"promotion_codes/(?P<id>[^/]+)", self._retrieve_promotion_code),
            ("POST", r"promotion_codes/(?P<id>[^/]+)", self._update_promotion_code),
            ("GET", r"charges/(?P<id>[^/]+)", lambda p, id: self._store.get("charge", id)),
        ]
        for route_method, pattern, view in routes:
            match = re.fullmatch(pattern, resource)
            if route_method == method and match:
                return view(params, **match.groupdict())
        raise StripeAPIError(404, f"Unrecognized request URL ({method}: {path}).")

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer(
            params.get("email", ""), params.get("name", ""), params.get("metadata", {})
        )
        return self._store.put("customer", customer)

    def _create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode not in ("payment", "subscription", "setup"):
            raise StripeAPIError(400, "Missing required param: mode.", "parameter_missing")
        for required in ("success_url", "line_items"):
            if not params.get(required):
                raise StripeAPIError(
                    400, f"Missing required param: {required}.", "parameter_missing"
                )
        if params.get("customer"):
            self._store.get("customer", params["customer"])
        line_items = []
        for item in params["line_items"]:
            if "price" in item:
                price = self._store.get("price", item["price"])
            else:
                data = item["price_data"]
                recurring = data.get("recurring") or {}
                price = self._price(
                    "prod_inline",
                    int(data["unit_amount"]),
                    data["currency"],
                    recurring.get("interval"),
                    {},
                )
                price["product_data"] = data.get("product_data", {})
            if mode == "subscription" and not price.get("recurring"):
                raise StripeAPIError(
                    400, "You must provide at least one recurring price.", "parameter_invalid"
                )
            line_items.append({"price": price, "quantity": int(item.get("quantity", 1))})
        session_id = self.new_id("cs")
        subscription_data = params.get("subscription_data") or {}
        discounts = params.get("discounts") or []
        if discounts and params.get("allow_promotion_codes"):
            raise StripeAPIError(
                400,
                "You may only specify one of these parameters: allow_promotion_codes, discounts.",
                "parameter_invalid",
            )
        promotion_codes = []
        for discount in discounts:
            promotion = self._store.get("promotion_code", discount.get("promotion_code", ""))
            if not _redeemable(promotion):
                raise StripeAPIError(
                    400, "This promotion code cannot be redeemed.", "promotion_code_invalid"
                )
            promotion_codes.append(promotion["id"])
        trial_days = int(subscription_data.get("trial_period_days") or 0)
        if trial_days and mode != "subscription":
            raise StripeAPIError(
                400, "trial_period_days is only for mode=subscription.", "parameter_invalid"
            )
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "payment_status": "unpaid",
            "customer": params.get("customer"),
            "customer_email": params.get("customer_email"),
            "customer_details": None,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}),
            "success_url": params["success_url"],
            "cancel_url": params.get("cancel_url"),
            "url": f"{self.url}/pay/{session_id}",
            "subscription": None,
            "payment_intent": None,
            "invoice": None,
            "amount_total": sum(i["price"]["unit_amount"] * i["quantity"] for i in line_items),
            "currency": line_items[0]["price"]["currency"],
            "submit_type": params.get("submit_type"),
            "created": int(time.time()),
            "expires_at": int(time.time()) + 86400,
            "livemode": False,
            "_line_items": line_items,
            "_subscription_metadata": subscription_data.get("metadata", {}),
            "_trial_period_days": trial_days,
            "_promotion_codes": promotion_codes,
        }
        amount_total = session["amount_total"]
        for promotion_id in promotion_codes:
            coupon = self._store.get("promotion_code", promotion_id)["promotion"]["coupon"]
            coupon = self._store.get("coupon", coupon)
            if coupon.get("percent_off"):
                amount_total -= round(amount_total * coupon["percent_off"] / 100)
            else:
                amount_total = max(amount_total - int(coupon["amount_off"]), 0)
        session["amount_total"] = 0 if trial_days else amount_total
        session["discounts"] = [{"promotion_code": p} for p in promotion_codes]
        self._store.put("checkout.session", session)
        return _public(session)

    def _retrieve_checkout_session(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        return _public(self._store.get("checkout.session", id))

    def _create_portal_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("customer"):
            raise StripeAPIError(400, "Missing required param: customer.", "parameter_missing")
        self._store.get("customer", params["customer"])
        portal_id = self.new_id("bps")
        return self._store.put(
            "billing_portal.session",
            {
                "id": portal_id,
                "object": "billing_portal.session",
                "customer": params["customer"],
                "return_url": params.get("return_url"),
                "url": f"{self.url}/portal/{portal_id}",
                "created": int(time.time()),
                "livemode": False,
            },
        )

    def _retrieve_subscription(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        return _expanded(self._store.get("subscription", id), params)

    def _list_subscriptions(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, `limit` a page (default 10), `starting_after` the next page; by
        default ended subscriptions are left out, `status=all` includes them."""
        subscriptions = sorted(
            self._store.all("subscription"), key=lambda s: (s["created"], s["id"]), reverse=True
        )
        if params.get("customer"):
            subscriptions = [s for s in subscriptions if s["customer"] == params["customer"]]
        status = params.get("status")
        if status != "all":
            subscriptions = [
                s
                for s in subscriptions
                if (s["status"] == status if status else s["status"] != "canceled")
            ]
        if params.get("starting_after"):
            ids = [s["id"] for s in subscriptions]
            subscriptions = subscriptions[ids.index(params["starting_after"]) + 1 :]
        limit = int(params.get("limit") or 10)
        return {
            "object": "list",
            "data": subscriptions[:limit],
            "has_more": len(subscriptions) > limit,
            "url": "/v1/subscriptions",
        }

    def _update_subscription(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        sub = self._store.get("subscription", id)
        if "cancel_at_period_end" in params:
            sub["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
        if "metadata" in params:
            sub["metadata"].update(params["metadata"])
        for change in params.get("items") or []:
            item = next((i for i in sub["items"]["data"] if i["id"] == change.get("id")), None)
            if item is None:
                raise StripeAPIError(400, f"No such subscription item: '{change.get('id')}'")
            if "quantity" in change:
                quantity = int(change["quantity"])
                if quantity < 1:
                    raise StripeAPIError(400, "Invalid quantity.", "parameter_invalid")
                item["quantity"] = quantity
        return _expanded(sub, params)

    def _create_coupon(self, params: dict[str, Any]) -> dict[str, Any]:
        duration = params.get("duration", "once")
        if duration not in ("once", "repeating", "forever"):
            raise StripeAPIError(400, "Invalid duration.", "parameter_invalid")
        if bool(params.get("percent_off")) == bool(params.get("amount_off")):
            raise StripeAPIError(
                400, "Provide exactly one of percent_off or amount_off.", "parameter_invalid"
            )
        if params.get("amount_off") and not params.get("currency"):
            raise StripeAPIError(400, "Missing required param: currency.", "parameter_missing")
        if duration == "repeating" and not params.get("duration_in_months"):
            raise StripeAPIError(
                400, "Missing required param: duration_in_months.", "parameter_missing"
            )
        coupon = {
            "id": self.new_id("coupon"),
            "object": "coupon",
            "name": params.get("name"),
            "percent_off": float(params["percent_off"]) if params.get("percent_off") else None,
            "amount_off": int(params["amount_off"]) if params.get("amount_off") else None,
            "currency": params.get("currency"),
            "duration": duration,
            "duration_in_months": (
                int(params["duration_in_months"]) if params.get("duration_in_months") else None
            ),
            "applies_to": params.get("applies_to"),
            "metadata": params.get("metadata", {}),
            "valid": True,
            "times_redeemed": 0,
            "created": int(time.time()),
            "livemode": False,
        }
        return self._store.put("coupon", coupon)

    def _create_promotion_code(self, params: dict[str, Any]) -> dict[str, Any]:
        promotion = params.get("promotion") or {}
        if promotion.get("type") != "coupon":
            raise StripeAPIError(400, "Missing required param: promotion.", "parameter_missing")
        self._store.get("coupon", promotion.get("coupon", ""))
        code = params.get("code") or self.new_id("PROMO").upper()
        if not re.fullmatch(r"[A-Za-z0-9-]+", code):
            raise StripeAPIError(400, "Invalid code.", "parameter_invalid")
        for other in self._store.all("promotion_code"):
            if other["active"] and other["code"].lower() == code.lower():
                raise StripeAPIError(
                    400, "An active promotion code with `code` already exists.", "resource_exists"
                )
        return self._store.put(
            "promotion_code",
            {
                "id": self.new_id("promo"),
                "object": "promotion_code",
                "code": code,
                "active": params.get("active", "true") != "false",
                "promotion": {"type": "coupon", "coupon": promotion["coupon"]},
                "expires_at": int(params["expires_at"]) if params.get("expires_at") else None,
                "max_redemptions": (
                    int(params["max_redemptions"]) if params.get("max_redemptions") else None
                ),
                "times_redeemed": 0,
                "metadata": params.get("metadata", {}),
                "created": int(time.time()),
                "livemode": False,
            },
        )

    def _retrieve_promotion_code(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        return self._store.get("promotion_code", id)

    def _update_promotion_code(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        promotion = self._store.get("promotion_code", id)
        if "active" in params:
            promotion["active"] = params["active"] == "true"
        if "metadata" in params:
            promotion["metadata"].update(params["metadata"])
        return promotion

    def _discount(self, promotion_id: str, sub: dict[str, Any]) -> dict[str, Any]:
        promotion = self._store.get("promotion_code", promotion_id)
        promotion["times_redeemed"] += 1
        coupon = self._store.get("coupon", promotion["promotion"]["coupon"])
        coupon["times_redeemed"] += 1
        now = int(time.time())
        months = coupon.get("duration_in_months")
        return {
            "id": self.new_id("di"),
            "object": "discount",
            "source": {"type": "coupon", "coupon": copy.deepcopy(coupon)},
            "promotion_code": promotion_id,
            "customer": sub["customer"],
            "subscription": sub["id"],
            "start": now,
            "end": now + months * 30 * 86400 if coupon["duration"] == "repeating" else None,
        }

    def _cancel_subscription(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        sub = self._store.get("subscription", id)
        sub["status"] = "canceled"
        sub["canceled_at"] = sub["ended_at"] = int(time.time())
        return sub

    def _create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("name"):
            raise StripeAPIError(400, "Missing required param: name.", "parameter_missing")
        return self._store.put("product", self._product(params["name"], params.get("metadata", {})))

    def _create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        self._store.get("product", params.get("product", ""))
        recurring = params.get("recurring") or {}
        price = self._price(
            params["product"],
            int(params["unit_amount"]),
            params["currency"],
            recurring.get("interval"),
            params.get("metadata", {}),
        )
        return self._store.put("price", price)

    def _list_prices(self, params: dict[str, Any]) -> dict[str, Any]:
        prices = self._store.all("price")
        if params.get("product"):
            prices = [p for p in prices if p["product"] == params["product"]]
        return {"object": "list", "data": prices, "has_more": False, "url": "/v1/prices"}

    # --- the pretend Checkout page, for browser tests ----------------------------------

    def _checkout_page(
        self, handler: BaseHTTPRequestHandler, method: str, session_id: str, body: str
    ) -> None:
        try:
            with self._lock:
                session = self._store.get("checkout.session", session_id)
        except StripeAPIError:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if method == "GET":
            amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
            page = (
                "<!doctype html><title>Checkout</title><h1>Pay "
                f"{html.escape(amount)}</h1><form method='post'>"
                "<input name='email' type='email' placeholder='Email'>"
                "<button type='submit'>Pay</button></form>"
            ).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html; charset=utf-8")
            handler.send_header("Content-Length", str(len(page)))
            handler.end_headers()
            handler.wfile.write(page)
            return
        form = decode_form(body)  # already read from the socket by _handle
        completed = self.complete_checkout(
            session_id, email=form.get("email") or "payer@example.com"
        )
        if self.webhook_url:
            self.deliver(self.event("checkout.session.completed", _public(completed)))
            if completed.get("subscription"):
                sub = self.get("subscription", completed["subscription"])
                self.deliver(self.event("customer.subscription.created", sub))
                self.deliver(self.event("invoice.paid", self.get("invoice", completed["invoice"])))
        handler.send_response(303)
        handler.send_header(
            "Location",
            completed["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id),
        )
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def _redeemable(promotion: dict[str, Any]) -> bool:
    if not promotion["active"]:
        return False
    if promotion["expires_at"] and promotion["expires_at"] <= time.time():
        return False
    limit = promotion["max_redemptions"]
    return not (limit and promotion["times_redeemed"] >= limit)


def _expanded(sub: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The subscription as the API answers: discounts as ids unless expanded."""
    answer = copy.deepcopy(sub)
    if "discounts" not in (params.get("expand") or []):
        answer["discounts"] = [d["id"] for d in sub.get("discounts") or []]
    return answer


def _start_next_period(sub: dict[str, Any]) -> None:
    for item in sub["items"]["data"]:
        length = item["current_period_end"] - item["current_period_start"]
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] += length


def _public(session: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in session.items() if not k.startswith("_")}


def _error(status: int, message: str, code: str) -> dict[str, Any]:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    return {"error": {"type": kind, "message": message, "code": code}}
