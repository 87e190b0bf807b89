"""Edge cases of the request rules, sent to a running server (tests/contract/schemathesis.sh).

Schemathesis draws requests at random and rarely lands on the edges of a rule (a key with
surrounding whitespace, February 29th of a year that is not a leap year, metadata nested exactly 16
levels deep). Each case here is a request on such an edge; the spec (docs/openapi.yaml) and the
server must agree on whether its shape is acceptable: valid by the spec if and only if the server
does not answer 400 (and never 5xx). The licenses involved exist and are in a state the request
suits, so nothing else refuses it. A case marked with a known server bug is reported, not failed,
until the bug is fixed (then it says so, and the mark is to be removed).

Run: KEYGATE_URL=... KEYGATE_ADMIN_TOKEN=... python tests/contract/edge_cases.py
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from typing import Any

import jsonschema_rs
import yaml

from keygate_api import call

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "openapi.yaml")
PRODUCT = "edge-editor"

with open(SPEC, encoding="utf-8") as file:
    COMPONENTS = yaml.safe_load(file)["components"]


def schema(name: str) -> Any:
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": COMPONENTS})


def issue(**terms: Any) -> str:
    status, answer = call("POST", "/v1/licenses", {"product": PRODUCT, "license_type": "perpetual",
                                                   "max_activations": 5, **terms}, admin=True)
    assert status == 201, answer
    return answer["licenses"][0]["license_key"]


# Unlimited: no seat limit, and releasing a device owes nothing to a release allowance.
KEY = issue(max_activations=0, allow_unlimited_activations=True)
assert call("POST", "/v1/activate", {"license_key": KEY, "product": PRODUCT, "hardware_id": "edge-1"})[0] == 200
CHECK = {"license_key": KEY, "product": PRODUCT, "hardware_id": "edge-1"}
DEEP_16 = {"a": 1}
for _ in range(15):
    DEEP_16 = {"a": DEEP_16}

# Server bugs these cases found, fixed since (each with a unit test in shared/src/api/tests.rs): whole
# numbers written as 2.0 or 1e0 were refused, nested objects were taken from arrays, and metadata numbers
# were parsed inexactly (1e-130 became a 500). A new one is marked with `bug=` until it is fixed.

failures: list[str] = []
known: list[str] = []


def agree(label: str, valid: bool, status: int, answer: Any, bug: str | None = None) -> None:
    accepted = status != 400
    problem = None
    if status >= 500:
        problem = f"{label}: the server answered {status} {answer}"
    elif valid != accepted:
        problem = f"{label}: the spec says {'valid' if valid else 'invalid'}, the server answered {status} {answer}"
    if bug and problem:
        known.append(f"{problem} [{bug}]")
    elif bug:
        failures.append(f"{label}: spec and server agree now; remove the mark of {bug!r}")
    elif problem:
        failures.append(problem)


def body_case(label: str, name: str, method: str, path: str, body: dict, admin: bool = False, bug: str | None = None) -> None:
    status, answer = call(method, path, body, admin)
    agree(label, schema(name).is_valid(body), status, answer, bug)


def check_with(**fields: Any) -> None:
    body = {**CHECK, **fields}
    body_case(f"check {fields}", "CheckRequest", "POST", "/v1/check", body)


def patch_with(body: dict, bug: str | None = None) -> None:
    """A patch, sent to a new license with what the patch needs and does not set itself."""
    unlimited = body.get("max_activations") == 0 and body.get("allow_unlimited_activations") is None
    key = issue(max_activations=0 if unlimited else 5, allow_unlimited_activations=unlimited)
    body_case(f"patch {body}", "LicensePatch", "PATCH", f"/v1/licenses/{key}", body, admin=True, bug=bug)


def issue_with(bug: str | None = None, **fields: Any) -> None:
    body = {"product": PRODUCT, "license_type": "perpetual", "max_activations": 1, **fields}
    body_case(f"issue {fields}", "IssueRequest", "POST", "/v1/licenses", body, admin=True, bug=bug)


# Value types.
for key in [f" {KEY} ", f"\t{KEY.lower()}\u3000", f"\u0085{KEY}", "A" * 64, "A" * 65, "", " ", "AB CD", "AB_CD"]:
    check_with(license_key=key)
for product in ["a" * 128, "a" * 129, "a b", "a.b_c-d", "é"]:
    check_with(product=product)
for hardware_id in ["!" * 256, "!" * 257, "a b", "~", "é", "a\u007f"]:
    check_with(hardware_id=hardware_id)
for feature in [None, "a" * 64, "a" * 65, "a:b"]:
    check_with(feature=feature)
for nonce in [None, "", "x" * 256, "x" * 257]:
    check_with(nonce=nonce)

# Timestamps (RFC 3339 with any one ASCII separator, or a date), calendar days, 1970..9999.
for stamp in [
    "2027-01-31", "+2027-01-31", "2028-02-29", "2000-02-29", "1972-02-29", "2027-01-31T00:00:00Z",
    "2027-01-31t23:59:59z", "2027-01-31 00:00:00.123456789012+05:30", "2027-01-31\u000000:00:00-23:59",
    "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2027-02-29", "1900-02-29", "2100-02-29", "1969-12-31",
    "2027-04-31", "2027-01-31T24:00:00Z", "2027-01-31T00:60:00Z", "2027-01-31T00:00:00+24:00",
    "2027-01-31T00:00:00+05:60", "2027-1-31", "2027-01-31T00:00:00", "2027-01-31\u00e900:00:00Z", "-2027-01-31",
    "+2027-01-31T00:00:00Z", "2027-01-31T00:00:00." + "1" * 40 + "Z", "2027-01-31T00:00:00." + "1" * 50 + "Z",
]:
    patch_with({"maintenance_until": stamp})

# Patches: what changes something, and what is refused whatever the license.
for body in [
    {}, {"version": 0}, {"status": None}, {"status": None, "version": 0}, {"metadata": None},
    {"maintenance_until": None}, {"metadata": {}}, {"features": None, "prevent_vm": True},
    {"max_activations": 0, "device_rotation": True}, {"max_activations": 0, "release_allowance": 1},
    {"max_activations": 0, "allow_unlimited_activations": False}, {"max_activations": 0},
    {"allow_unlimited_activations": True, "release_allowance": 1}, {"allow_unlimited_activations": True, "device_rotation": True},
    {"allow_overages": False, "max_overages": 3}, {"allow_overages": False, "max_overages": None},
    {"max_consumptions": 1_000_000_000_001}, {"version": 18446744073709551616, "prevent_vm": True},
]:
    patch_with(body)

# Issue: the combinations of options.
for fields in [
    {"quantity": None}, {"quantity": 0}, {"quantity": 1000}, {"quantity": 1001},
    {"is_floating": True, "freeze_days": 0}, {"is_floating": True, "freeze_days": 1},
    {"is_floating": True, "max_transfers": None}, {"is_floating": True, "max_transfers": 0},
    {"is_floating": True, "max_activations": 100000}, {"is_floating": True, "max_activations": 100001},
    {"is_floating": True, "device_rotation": True}, {"is_floating": True, "allow_unlimited_activations": True},
    {"can_borrow": True, "max_borrow_hours": 5}, {"is_floating": True, "can_borrow": True},
    {"is_floating": True, "can_borrow": True, "max_borrow_hours": 8760}, {"max_borrow_hours": 5},
    {"floating_timeout_minutes": 5}, {"is_floating": True, "floating_timeout_minutes": None},
    {"max_activations": 0}, {"max_activations": 0, "allow_unlimited_activations": True},
    {"allow_unlimited_activations": True, "release_allowance": None},
    {"allow_unlimited_activations": True, "release_allowance": 0}, {"allow_unlimited_activations": True, "device_rotation": True},
    {"allow_overages": False, "max_overages": 1}, {"allow_overages": True, "max_overages": 1_000_000_000_000},
    {"max_overages": 1_000_000_000_001, "allow_overages": True}, {"expiration": {"type": "never", "date": None}},
    {"expiration": {"type": "never", "days": 5}}, {"expiration": {"type": "on_date"}},
    {"expiration": {"type": "on_date", "date": "2030-01-01", "days": None}},
    {"expiration": {"type": "days_after_creation", "days": 0}}, {"expiration": {"type": "days_after_creation", "days": 36500}},
    {"expiration": {"type": "days_after_creation", "days": 36501}}, {"customer": {"email": "a@b"}},
    {"customer": {"email": "a@b@c"}}, {"customer": {"email": "@b"}}, {"customer": {"email": "a b@c"}},
    {"customer": {"email": "a@" + "b" * 252}}, {"customer": {"email": "a@" + "b" * 253}}, {"customer": None},
    {"customer": {"name": "Ann\u00e9", "company": ""}}, {"customer": {"name": "a\nb"}}, {"order_id": ""},
    {"features": [{"code": "f", "allow_overages": False, "max_overages": 1}]},
    {"features": [{"code": "f", "max_overages": None}]}, {"features": [{"code": "f", "allow_overages": None}]},
    {"metadata": DEEP_16}, {"metadata": {"x": DEEP_16}}, {"metadata": {"": 1}}, {"metadata": {"a": [{"": 1}]}},
    {"metadata": {"a": 1e126}}, {"metadata": {"a": 9.99e125}}, {"metadata": {"a": 2e-130}}, {"metadata": {"a": 1e-131}},
    {"metadata": {"a": -0.0, "b": None, "c": [True, "s"]}}, {"metadata": None}, {"metadata": []},
]:
    issue_with(**fields)
issue_with(max_activations=2.0)
issue_with(quantity=1e0)
issue_with(customer=[None, None])
issue_with(expiration=["never"])
issue_with(features=[["export"]])
issue_with(metadata={"a": 1e-130})

# Listing: exactly one lookup, the page size, nothing unknown.
for query in [
    {"customer_email": "a@b"}, {"order_id": "x"}, {"trial_email": "a@b"}, {}, {"customer_email": "a@b", "order_id": "x"},
    {"order_id": "x", "limit": 1}, {"order_id": "x", "limit": 100}, {"order_id": "x", "limit": 0},
    {"order_id": "x", "limit": 101}, {"order_id": "x", "other": 1}, {"order_id": "x y"},
]:
    status, answer = call("GET", "/v1/licenses?" + urllib.parse.urlencode(query), admin=True)
    agree(f"list {query}", schema("ListQuery").is_valid(query), status, answer)

# The Idempotency-Key header.
for value in ["k", "k" * 255, "k" * 256, "a b", "\u00e9"]:
    body = {"product": PRODUCT, "license_type": "perpetual", "max_activations": 1}
    try:
        status, answer = call("POST", "/v1/licenses", body, admin=True, headers={"Idempotency-Key": value})
    except (UnicodeEncodeError, ValueError):
        continue  # not sendable as a header by this client
    agree(f"Idempotency-Key {value!r}", schema("IdempotencyKey").is_valid(value), status, answer)

# A check by query: the same rules, as strings; unknown and repeated parameters are refused.
for query in [
    [("license_key", KEY), ("product", PRODUCT), ("hardware_id", "edge-1")],
    [("license_key", f" {KEY.lower()} "), ("product", PRODUCT), ("hardware_id", "edge-1"), ("feature", "f")],
    [("license_key", KEY), ("product", PRODUCT), ("hardware_id", "edge-1"), ("feature", "")],
    [("license_key", KEY), ("product", PRODUCT), ("hardware_id", "edge 1")],
    [("license_key", KEY), ("product", PRODUCT)],
]:
    status, answer = call("GET", "/v1/check?" + urllib.parse.urlencode(query))
    parameters = {"license_key": "LicenseKey", "product": "Product", "hardware_id": "HardwareId",
                  "feature": "FeatureCode", "nonce": "Nonce"}
    given = dict(query)
    valid = all(name in given for name in ("license_key", "product", "hardware_id")) and all(
        schema(parameters[name]).is_valid(value) for name, value in given.items())
    agree(f"check by query {query}", valid, status, answer)
for extra in [[("other", "1")], [("product", PRODUCT)]]:
    query = [("license_key", KEY), ("product", PRODUCT), ("hardware_id", "edge-1"), *extra]
    status, answer = call("GET", "/v1/check?" + urllib.parse.urlencode(query))
    agree(f"check by query {query}", False, status, answer)

# Offline request files: the format and the kind each route takes.
offline_devices = iter(range(1000))
for route, kind in [("/v1/activate/offline", "activate"), ("/v1/deactivate/offline", "deactivate")]:
    for fields in [{}, {"kind": "deactivate" if kind == "activate" else "activate"}, {"format": "keygate-offline-request/2"},
                   {"device_name": None, "platform": ""}, {"nonce": None}]:
        activated = f"edge-offline-{next(offline_devices)}"
        call("POST", "/v1/activate", {**CHECK, "hardware_id": activated})
        file = {"format": "keygate-offline-request/1", "kind": kind, "license_key": KEY, "product": PRODUCT,
                "hardware_id": activated, "nonce": "n-1", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **fields}
        name = "OfflineActivationRequest" if kind == "activate" else "OfflineDeactivationRequest"
        body_case(f"{route} {fields}", name, "POST", route, file)

# Path parameters, percent-encoded: a key with whitespace around it, a hardware id with a slash.
for key in [f" {KEY.lower()}\t", "AB CD", "A" * 65]:
    status, answer = call("GET", "/v1/licenses/" + urllib.parse.quote(key, safe=""), admin=True)
    agree(f"show {key!r}", schema("LicenseKey").is_valid(key), status, answer)
for hardware_id in ["edge/slash?#%", "edge space"]:
    call("POST", "/v1/activate", {**CHECK, "hardware_id": hardware_id})
    status, answer = call("DELETE", f"/v1/licenses/{KEY}/devices/" + urllib.parse.quote(hardware_id, safe=""), admin=True)
    agree(f"release {hardware_id!r}", schema("HardwareId").is_valid(hardware_id), status, answer)

for item in known:
    print("KNOWN", item)
for failure in failures:
    print("MISMATCH", failure)
print(f"edge cases: {len(failures)} mismatches, {len(known)} known server bugs")
sys.exit(1 if failures else 0)
