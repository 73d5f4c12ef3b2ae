"""Properties of the order JSON: checked on the way in, the same on the way out.

Any JSON value, and valid orders with one field spoilt, either validate or
get the documented InputError naming the field. An order that validates is
created on a real store (SQLite and PostgreSQL) and comes back through
`order show --format json` with every field as given (normalised as the
contract says: names trimmed, the address lower-cased, amounts with two
decimals). An address that validates must be one a notification can be sent to.
"""
from __future__ import annotations

import decimal
import json
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.cli import main as cli
from daemon.mail import mime
from daemon.config import settings_from_dict
from daemon.errors import InputError
from daemon.orders.as_json import NUMBER_RE, is_order_number, parse_new_order
from daemon.orders.service import create_order
from daemon.store.models import Order
from fuzzing import examples

# Validation alone needs no database: these settings are never opened.
SETTINGS = settings_from_dict({"shop": {"name": "Teeladen", "address": "orders@shop.example",
                                        "base_url": "https://shop.example/status", "locale": "de"},
                               "database": {"url": "sqlite:////nonexistent/ordermail.db"}})


# ---- valid orders -------------------------------------------------------------------

def _one_line(min_size: int, max_size: int):
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), min_size=min_size, max_size=max_size) \
        .filter(lambda t: t.strip())


cents = st.integers(0, 99_999_999_999_999)
amounts = st.one_of(
    cents.map(lambda c: f"{c // 100}.{c % 100:02d}"),
    cents.map(lambda c: f"{c // 100},{c % 100:02d}"),
    st.integers(0, 10**9),
    st.integers(0, 10**8).map(lambda c: c / 100),                    # a JSON number with cents
    cents.map(lambda c: f"  {c // 100}.{c % 100 // 10} "))
_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~."
labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
ascii_emails = st.builds(lambda local, domain, tld: f"{local}@{domain}.{tld}",
                         st.text(_ATEXT, min_size=1, max_size=30), labels, labels)
items = st.fixed_dictionaries(
    {"name": _one_line(1, 300), "quantity": st.integers(1, 1_000_000), "unit_price": amounts},
    optional={"sku": st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=64))})
orders_json = st.fixed_dictionaries(
    {"customer": st.fixed_dictionaries({"name": _one_line(1, 200), "email": ascii_emails}),
     "items": st.lists(items, min_size=1, max_size=4),
     "total": amounts,
     "payment_method": st.sampled_from(["bank_transfer", "paypal"])},
    optional={"number": st.one_of(st.from_regex(NUMBER_RE, fullmatch=True).filter(is_order_number),
                                  st.integers(0, 10**31)),
              "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
              "locale": st.sampled_from(["de", "en", "fr"])})


def _amount(value) -> str:
    text = value.strip().replace(",", ".") if isinstance(value, str) else repr(value)
    return str(decimal.Decimal(text).quantize(decimal.Decimal("0.01")))


def _expected(data: dict) -> dict:
    """The contract's fields of `show --format json`, from the JSON given."""
    email = data["customer"]["email"].strip()
    local, _, domain = email.rpartition("@")
    expected = {
        "customer": {"name": data["customer"]["name"].strip(), "email": f"{local}@{domain}".lower()},
        "items": [{"sku": (item.get("sku") or "").strip(), "name": item["name"].strip(),
                   "quantity": item["quantity"], "unit_price": _amount(item["unit_price"])}
                  for item in data["items"]],
        "total": _amount(data["total"]), "currency": data.get("currency", "EUR"),
        "payment_method": data["payment_method"], "locale": data.get("locale", "de")}
    if "number" in data:
        expected["number"] = str(data["number"])
    return expected


@examples(ci=40)
@given(orders_json)
def test_an_order_that_validates_comes_back_the_same_through_show_json(store, settings, capsys, data):
    with store.atomic() as transaction:           # each example starts from an empty book
        order = create_order(store, settings, json.loads(json.dumps(data)), quiet=True)
        capsys.readouterr()
        args = cli.build_parser().parse_args(["order", "show", order.number, "--format", "json"])
        assert cli.cmd_order_show(args, settings, store) == 0
        shown = json.loads(capsys.readouterr().out)
        transaction.rollback()
    expected = _expected(data)
    assert {key: shown[key] for key in expected} == expected
    assert not any(shown["status"].values())
    assert [e["kind"] for e in shown["events"]] == ["created"]


@examples(ci=200)
@given(orders_json)
def test_an_address_that_validates_can_be_written_into_a_notification(data):
    new = parse_new_order(data, SETTINGS)
    mime.address(new.customer_email, new.customer_name)


# ---- anything else --------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["\udcff", "\x00", "1e999", "NaN", "-0", "0.001", "12,345", " ", "@", "a@b.c"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
PATHS = [("number",), ("customer",), ("customer", "name"), ("customer", "email"), ("items",),
         ("items", 0), ("items", 0, "name"), ("items", 0, "quantity"), ("items", 0, "unit_price"),
         ("items", 0, "sku"), ("total",), ("currency",), ("payment_method",), ("locale",), ("unknown",)]


@st.composite
def spoilt_orders(draw):
    """A valid order with one field replaced by any JSON value, or removed."""
    data = draw(orders_json)
    path = draw(st.sampled_from(PATHS))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = draw(json_values)
    return data


@examples(ci=300)
@given(st.one_of(json_values, spoilt_orders()))
def test_any_json_validates_or_gets_an_input_error_naming_the_field(data):
    try:
        parse_new_order(data, SETTINGS)
    except InputError as exc:
        message = str(exc)
        assert message.startswith("order JSON") and "\n" not in message.replace("\\n", ""), message


@examples(ci=50)
@given(orders_json, st.text(min_size=1, max_size=6))
def test_any_address_that_validates_can_be_written_into_a_notification(data, local):
    data["customer"]["email"] = f"{local}@example.org"
    try:
        new = parse_new_order(data, SETTINGS)
    except InputError:
        return
    mime.address(new.customer_email, new.customer_name)
