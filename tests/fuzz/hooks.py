"""Schemathesis hooks for tests/fuzz/run.sh (loaded with SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

The OpenAPI documents state every rule of a single field or parameter. The rules below are
the ones JSON Schema cannot state; each is written in the operation's or field's
`description` in the documents, and this module makes the requests the fuzzer generates keep
to them, so that a refusal of a request the fuzzer calls valid is a real finding. Only
requests the documents allow (positive data) are changed: a forbidden request must stay
forbidden, whatever part of it was made wrong.

1. POST /v1/orders `customer_id` must name an active user (a reference, checked against the
   event store: command-api/src/core/references.rs). Replaced by a user this module
   registers once per command API.
2. POST /v1/orders `items`: each SKU (trimmed) at most once, and the total (quantity times
   unit price, summed) at least 1 and at most MAX_AMOUNT_MINOR (domain/src/order/aggregate.rs).
   Repeated SKUs are dropped (the first item always stays); unit prices are lowered until the
   total fits, and an order of free lines only gets a first line priced 1.
3. POST /v1/payments must name an order awaiting payment and repeat its total and currency
   (command-api/src/core/references.rs). Taken from an order this module places once.
4. POST /v1/users/{id}/profile `preferences`: at most 8 KiB as compact JSON and no NUL in any
   key or string inside (domain/src/values/text.rs `Preferences`). Keys are dropped, largest
   first, until it fits with a margin (Python and serde_json print some numbers differently).
5. Query `cursor`: opaque, only a `next_cursor` the API returned is valid
   (query-api/src/params.rs, query-api/src/routes/audit.rs). Never sent.
6. Analytics `from` must not be after `to` (query-api/src/routes/analytics.rs); the audit
   export's `from` must be before its `to` (query-api/src/routes/audit.rs). Swapped, and an
   export's equal pair loses its `to`.
7. Query `as_of` and `min_version` are never sent together (422, query-api/src/as_of.rs):
   `min_version` is dropped.
8. `Idempotency-Key`, if a document lists it: the same key with another body is 422
   (docs/api.md). Each request gets a key of its own (the generated key, a unique suffix).

One filter applies to every request, allowed or forbidden:

9. A header value with a control character other than horizontal tab is not an HTTP field
   value (RFC 9110, section 5.5), so such a request is not an HTTP message at all: the HTTP
   parser answers it 400 without a body before the service sees it, and no document can say
   otherwise. The negative run generates them; they are not sent.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import uuid

import requests
import schemathesis

# domain/src/values/money.rs MAX_AMOUNT_MINOR; domain/src/values/text.rs Preferences::MAX_BYTES
# less a margin.
MAX_AMOUNT_MINOR = 10_000_000_000_000
PREFERENCES_BUDGET = 8 * 1024 - 1024
IDEMPOTENCY_KEY_MAX = 255

_fixtures: dict[str, dict] = {}

# Characters no HTTP field value may hold (rule 9).
_NOT_IN_FIELD_VALUES = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _is_positive(case) -> bool:
    method = getattr(case, "data_generation_method", None)
    return method is not None and method.is_positive


def _post(base_url: str, path: str, body: dict) -> dict:
    # As the admin the fuzzer acts as (`tests/fuzz/run.sh` exports its token).
    headers = {"Authorization": f"Bearer {os.environ['FUZZ_TOKEN']}"}
    response = requests.post(f"{base_url}{path}", json=body, headers=headers, timeout=10)
    if response.status_code != 201:
        raise RuntimeError(f"fixture {path} answered {response.status_code}: {response.text}")
    return response.json()


def _fixture(base_url: str) -> dict:
    """A registered user and an order of theirs, made once per command API."""
    base_url = base_url.rstrip("/")
    if base_url not in _fixtures:
        user = _post(
            base_url,
            "/v1/users",
            {
                "email": f"fuzz-{uuid.uuid4().hex}@example.com",
                "display_name": "Fuzz fixture",
                "password": uuid.uuid4().hex,
            },
        )
        order = _post(
            base_url,
            "/v1/orders",
            {
                "customer_id": user["id"],
                "currency": "EUR",
                "items": [{"sku": "FUZZ-1", "quantity": 2, "unit_price_minor": 1250}],
                "shipping_address": {
                    "label": "home",
                    "line1": "1 Main St",
                    "city": "Berlin",
                    "postal_code": "10115",
                    "country": "DE",
                },
            },
        )
        _fixtures[base_url] = {
            "customer_id": user["id"],
            "order_id": order["id"],
            "total_minor": order["total_minor"],
            "currency": "EUR",
        }
    return _fixtures[base_url]


def _keep_order_rules(body: dict, fixture: dict) -> None:
    body["customer_id"] = fixture["customer_id"]
    items, seen = [], set()
    for item in body.get("items", []):
        sku = item["sku"].strip()
        if sku not in seen:
            seen.add(sku)
            items.append(item)
    total = sum(item["quantity"] * item["unit_price_minor"] for item in items)
    if total > MAX_AMOUNT_MINOR:
        for item in items:
            share = MAX_AMOUNT_MINOR // (item["quantity"] * len(items))
            item["unit_price_minor"] = min(item["unit_price_minor"], share)
    if items and total == 0:
        items[0]["unit_price_minor"] = 1
    body["items"] = items


def _keep_payment_rules(body: dict, fixture: dict) -> None:
    body["order_id"] = fixture["order_id"]
    body["amount_minor"] = fixture["total_minor"]
    body["currency"] = fixture["currency"]


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\0" in key or _holds_nul(item) for key, item in value.items())
    return False


def _keep_preferences_rules(body: dict) -> None:
    preferences = body.get("preferences")
    if not isinstance(preferences, dict):
        return
    for key in [k for k, v in preferences.items() if "\0" in k or _holds_nul(v)]:
        del preferences[key]

    def size() -> int:
        text = json.dumps(preferences, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8"))

    while preferences and size() > PREFERENCES_BUDGET:
        largest = max(preferences, key=lambda k: len(json.dumps(preferences[k])) + len(k))
        del preferences[largest]


def _instant(value):
    try:
        return datetime.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except (ValueError, AttributeError):
        return None


def _keep_query_rules(query: dict) -> None:
    query.pop("cursor", None)
    if "as_of" in query:
        query.pop("min_version", None)
    first, last = query.get("from"), query.get("to")
    if not (isinstance(first, str) and isinstance(last, str)):
        return
    if len(first) == 10 and len(last) == 10:
        # Days are `YYYY-MM-DD` with four-digit years, so text order is day order.
        if first > last:
            query["from"], query["to"] = last, first
        return
    # Instants (the audit export): compared as instants, whatever their offsets.
    a, b = _instant(first), _instant(last)
    if a is None or b is None or a.tzinfo is None or b.tzinfo is None:
        return
    if a > b:
        query["from"], query["to"] = last, first
    elif a == b:
        del query["to"]


def _unique_idempotency_key(headers: dict) -> None:
    for name in list(headers):
        if name.lower() == "idempotency-key":
            suffix = "-" + uuid.uuid4().hex
            headers[name] = str(headers[name])[: IDEMPOTENCY_KEY_MAX - len(suffix)] + suffix


@schemathesis.hook
def map_case(context, case):
    if not _is_positive(case):
        return case
    if case.headers:
        _unique_idempotency_key(case.headers)
    if case.query:
        _keep_query_rules(case.query)
    method, path = case.operation.method.upper(), case.operation.path
    if method == "POST" and isinstance(case.body, dict):
        if path == "/v1/orders":
            _keep_order_rules(case.body, _fixture(case.operation.base_url))
        elif path == "/v1/payments":
            _keep_payment_rules(case.body, _fixture(case.operation.base_url))
        elif path == "/v1/users/{id}/profile":
            _keep_preferences_rules(case.body)
    return case


@schemathesis.hook
def filter_case(context, case):
    """Rule 9: only requests that are HTTP messages."""
    return not any(
        isinstance(value, str) and _NOT_IN_FIELD_VALUES.search(value)
        for value in (case.headers or {}).values()
    )
