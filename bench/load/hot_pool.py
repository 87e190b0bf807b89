"""Keygate's hot-license load test (make bench): one large floating pool, many devices heartbeating.

Every simulated user drives its own share of HOT_DEVICES devices on one floating license of
HOT_SEATS seats (more seats than devices, so no device may be refused): each call is a heartbeat
(POST /v1/check) of one of its devices, and a device's first heartbeat, answered "not activated",
activates it. Any 4xx or 5xx, or a refused activation, is unexpected. When the run ends the pool's
stored leases are compared with what the devices were told: never more leases than seats, and every
device told VALID still holds its lease (the leases last longer than the run), and the pool's count
of leases is the leases its devices hold. Results go to the
JSON file named by LOAD_OUT.

Environment: KEYGATE_URL, KEYGATE_ADMIN_TOKEN, LOAD_USERS, HOT_SEATS, HOT_DEVICES, LOAD_OUT.
"""

import itertools
import json
import os
import threading

import requests
from locust import HttpUser, between, events, task

BASE = os.environ["KEYGATE_URL"]
ADMIN = {"authorization": f"Bearer {os.environ['KEYGATE_ADMIN_TOKEN']}"}
USERS = int(os.environ.get("LOAD_USERS", "16"))
SEATS = int(os.environ.get("HOT_SEATS", "10000"))
DEVICES = int(os.environ.get("HOT_DEVICES", "2000"))
PRODUCT = "load"

_ids = itertools.count()
_lock = threading.Lock()
_pool = {}
_valid = set()
_unexpected = {}


def vendor(method, path, body=None):
    response = requests.request(method, f"{BASE}{path}", json=body, headers=ADMIN, timeout=30)
    response.raise_for_status()
    return response.json()


@events.test_start.add_listener
def _pool_license(environment, **_kwargs):
    if not _pool:
        terms = {"product": PRODUCT, "license_type": "subscription", "is_floating": True,
                 "max_activations": SEATS, "floating_timeout_minutes": 60}
        _pool["key"] = vendor("POST", "/v1/licenses", terms)["licenses"][0]["license_key"]


def unexpected(kind):
    with _lock:
        _unexpected[kind] = _unexpected.get(kind, 0) + 1


class Devices(HttpUser):
    """A share of the pool's devices, heartbeating in turn with no pause."""

    wait_time = between(0, 0)

    def on_start(self):
        number = next(_ids)
        self.devices = [f"hot-{i}" for i in range(number, DEVICES, USERS)]
        self.turn = itertools.cycle(self.devices)

    def post(self, path, body, name):
        with self.client.post(path, json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                unexpected(f"{name} {response.status_code}")
                return None
            response.success()
            return response.json()

    @task
    def heartbeat(self):
        if not self.devices:
            return
        hardware_id = next(self.turn)
        body = {"license_key": _pool["key"], "product": PRODUCT, "hardware_id": hardware_id}
        answer = self.post("/v1/check", body, "heartbeat")
        if answer is None:
            return
        if not answer.get("valid"):
            if answer.get("code") != "DEVICE_NOT_ACTIVATED":
                unexpected(f"heartbeat {answer.get('code')}")
                return
            if self.post("/v1/activate", body, "take a seat") is None:
                return
        with _lock:
            _valid.add(hardware_id)


def stored_leases(key):
    """The pool's leases as the vendor API shows them: each device's own, a page at a time."""
    leases, cursor = {}, None
    while True:
        page = vendor("GET", f"/v1/licenses/{key}?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        for device in page["devices"]:
            if device.get("lease_expires_at"):
                leases[device["hardware_id"]] = device["lease_expires_at"]
        cursor = page.get("next_cursor")
        if not cursor:
            return page["floating"]["seats_held"], leases


@events.test_stop.add_listener
def _invariants(environment, **_kwargs):
    held, leases = stored_leases(_pool["key"])
    violations = []
    if len(leases) > SEATS:
        violations.append(f"{len(leases)} leases on {SEATS} seats")
    if held != len(leases):
        violations.append(f"the pool counts {held} leases, its devices hold {len(leases)}")
    missing = sorted(_valid - set(leases))
    if missing:
        violations.append(f"{len(missing)} devices told VALID hold no lease, e.g. {missing[:3]}")
    out = os.environ.get("LOAD_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"unexpected": _unexpected, "violations": violations, "devices": len(_valid),
                       "seats": SEATS, "leases": len(leases)}, f)
