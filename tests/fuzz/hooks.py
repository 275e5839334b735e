"""Schemathesis hooks for tests/fuzz/run.sh: keep generated requests to the rules the OpenAPI
documents state only in descriptions (JSON Schema cannot express them), so that every request
the fuzzer calls valid really is valid. Each entry says which rule and where the server
enforces it; the list is meant to stay this short.

1. POST /v1/orders `customer_id` must name an active user (command-api/src/routes/orders.rs,
   `require_active_customer`): replaced by a user this module registers once.
2. POST /v1/orders `items`: each `sku` at most once and the total at most MAX_AMOUNT_MINOR
   (domain/src/order/aggregate.rs): skus are numbered and unit prices capped.
3. POST /v1/payments must name an existing order and repeat its total and currency
   (command-api/src/routes/payments.rs): replaced by an order this module places once.
4. POST /v1/users/{id}/profile `preferences`: at most 8 KiB as compact JSON and no NUL in any
   string (domain/src/values/text.rs): an object breaking either is replaced by `{}`.
5. Query `cursor`: opaque, only a value the API returned is valid (query-api/src/params.rs,
   query-api/src/routes/audit.rs): never sent.
6. Analytics `from` must not be after `to` (query-api/src/routes/analytics.rs): swapped.
"""
import json
import uuid

import requests
import schemathesis

MAX_AMOUNT_MINOR = 10_000_000_000_000
MAX_PREFERENCE_BYTES = 8 * 1024
_fixtures = {}


def _fixture(base_url):
    """A registered user and an order placed for it, created once per command API."""
    if base_url not in _fixtures:
        user = requests.post(
            f"{base_url}/v1/users",
            json={"email": f"fuzz-{uuid.uuid4().hex}@example.com", "display_name": "Fuzz"},
            timeout=10,
        )
        user.raise_for_status()
        customer_id = user.json()["id"]
        order = requests.post(
            f"{base_url}/v1/orders",
            json={
                "customer_id": customer_id,
                "currency": "EUR",
                "items": [{"sku": "FUZZ-1", "quantity": 2, "unit_price_minor": 1250}],
                "shipping_address": {
                    "label": "home", "line1": "1 Main St", "city": "Berlin",
                    "postal_code": "10115", "country": "DE",
                },
            },
            timeout=10,
        )
        order.raise_for_status()
        _fixtures[base_url] = {
            "customer_id": customer_id,
            "order_id": order.json()["id"],
            "total_minor": order.json()["total_minor"],
            "currency": "EUR",
        }
    return _fixtures[base_url]


def _place_order(body, fixture):
    body["customer_id"] = fixture["customer_id"]
    items = body.get("items") or []
    share = MAX_AMOUNT_MINOR // max(len(items), 1)
    for index, item in enumerate(items):
        item["sku"] = f"{item['sku'].strip()[:58]}-{index}"
        item["unit_price_minor"] = min(item["unit_price_minor"], share // item["quantity"])
    return body


def _holds_nul(value):
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\0" in key or _holds_nul(item) for key, item in value.items())
    return False


def _profile(body):
    preferences = body.get("preferences")
    if isinstance(preferences, dict):
        size = len(json.dumps(preferences, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_PREFERENCE_BYTES or _holds_nul(preferences):
            body["preferences"] = {}
    return body


@schemathesis.hook
def before_generate_body(context, strategy):
    operation = context.operation
    if operation.method.upper() != "POST" or not isinstance(operation.base_url, str):
        return strategy
    base_url = operation.base_url.rstrip("/")
    if operation.path == "/v1/orders":
        return strategy.map(lambda body: _place_order(body, _fixture(base_url)))
    if operation.path == "/v1/payments":
        def pay(body):
            fixture = _fixture(base_url)
            body.update(order_id=fixture["order_id"], amount_minor=fixture["total_minor"],
                        currency=fixture["currency"])
            return body
        return strategy.map(pay)
    if operation.path == "/v1/users/{id}/profile":
        return strategy.map(_profile)
    return strategy


def _query(query):
    if not isinstance(query, dict):
        return query
    query.pop("cursor", None)
    if query.get("from") and query.get("to") and query["from"] > query["to"]:
        query["from"], query["to"] = query["to"], query["from"]
    return query


@schemathesis.hook
def before_generate_query(context, strategy):
    return strategy.map(_query)
