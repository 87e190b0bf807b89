"""Keygate's load test (make bench): a mixed client workload against `keygate serve` on DynamoDB Local.

Each simulated user is one customer's machine park: its own node-locked license (devices come and
go), a device on a shared floating pool with a seat for every user (heartbeats), and metered use.
Every answer the workload does not call for (any 5xx, any 4xx) counts as unexpected. When the run
ends, the stored state is compared with what the users were told (seats, devices, counters): each
mismatch is an invariant violation. Results go to the JSON file named by LOAD_OUT.

Environment: KEYGATE_URL, KEYGATE_ADMIN_TOKEN, LOAD_USERS (the pool's seats), LOAD_OUT.
"""

import itertools
import json
import os
import threading
import uuid

import requests
from locust import HttpUser, between, constant_throughput, events, task

BASE = os.environ["KEYGATE_URL"]
ADMIN = {"authorization": f"Bearer {os.environ['KEYGATE_ADMIN_TOKEN']}"}
SEATS = int(os.environ.get("LOAD_USERS", "16"))
PRODUCT = "load"
MAX_DEVICES = 3

_ids = itertools.count()
_parks = []
_lock = threading.Lock()
_pool = {}
_unexpected = {}


def vendor(method, path, body=None):
    response = requests.request(method, f"{BASE}{path}", json=body, headers=ADMIN, timeout=30)
    response.raise_for_status()
    return response.json()


def issue(terms):
    body = {"product": PRODUCT, "license_type": "perpetual"}
    body.update(terms)
    return vendor("POST", "/v1/licenses", body)["licenses"][0]["license_key"]


@events.test_start.add_listener
def _pool_license(environment, **_kwargs):
    if not _pool:
        _pool["key"] = issue({"is_floating": True, "max_activations": SEATS, "floating_timeout_minutes": 10})


def unexpected(kind):
    with _lock:
        _unexpected[kind] = _unexpected.get(kind, 0) + 1


class Park(HttpUser):
    """One customer's machines. `wait_time` is set per run (see bench/load/run.sh)."""

    wait_time = between(0, 0) if os.environ.get("LOAD_RATE") is None else constant_throughput(float(os.environ["LOAD_RATE"]))

    def on_start(self):
        number = next(_ids)
        self.key = issue({"max_activations": MAX_DEVICES, "release_allowance": 100})
        self.devices = []
        self.serial = 0
        self.consumed = 0
        self.floating_device = f"pool-{number}"
        self.activate_new()
        with _lock:
            _parks.append(self)

    def device_body(self, hardware_id, key=None):
        return {"license_key": key or self.key, "product": PRODUCT, "hardware_id": hardware_id}

    def expect(self, method, path, body, name, headers=None, ok=200):
        with self.client.request(method, path, json=body, headers=headers, name=name, catch_response=True) as response:
            if response.status_code != ok:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                unexpected(f"{name} {response.status_code}")
                return None
            answer = response.json()
            response.success()
            return answer

    def activate_new(self):
        self.serial += 1
        hardware_id = f"pc-{self.serial}"
        keyed = {"idempotency-key": str(uuid.uuid4())}
        if self.expect("POST", "/v1/activate", self.device_body(hardware_id), "activate", keyed) is not None:
            self.devices.append(hardware_id)

    @task(70)
    def check(self):
        answer = self.expect("POST", "/v1/check", self.device_body(self.devices[0]), "check")
        if answer is not None and not answer.get("valid"):
            unexpected(f"check {answer.get('code')}")

    @task(15)
    def heartbeat(self):
        body = self.device_body(self.floating_device, _pool["key"])
        answer = self.expect("POST", "/v1/check", body, "heartbeat (floating check)")
        if answer is not None and not answer.get("valid"):
            # The first heartbeat of a device that is not activated yet activates it.
            activated = self.expect("POST", "/v1/activate", body, "activate (floating)")
            if activated is None:
                unexpected("heartbeat refused")

    @task(8)
    def consume(self):
        body = dict(self.device_body(self.devices[0]), amount=1)
        keyed = {"idempotency-key": str(uuid.uuid4())}
        if self.expect("POST", "/v1/consume", body, "consume", keyed) is not None:
            self.consumed += 1

    @task(5)
    def rotate(self):
        """A machine comes (while there is a seat) or the oldest extra one goes."""
        if len(self.devices) < MAX_DEVICES:
            self.activate_new()
        else:
            gone = self.devices[1]
            keyed = {"idempotency-key": str(uuid.uuid4())}
            if self.expect("POST", "/v1/deactivate", self.device_body(gone), "deactivate", keyed) is not None:
                self.devices.remove(gone)


@events.test_stop.add_listener
def _invariants(environment, **_kwargs):
    """Stored state against what the users were told; writes the results."""
    violations = []
    for park in _parks:
        stored = vendor("GET", f"/v1/licenses/{park.key}")
        bound = sorted(d["hardware_id"] for d in stored["devices"])
        if bound != sorted(park.devices):
            violations.append(f"{park.key}: devices {bound} != {sorted(park.devices)}")
        if stored["license"]["times_activated"] != len(bound) or len(bound) > MAX_DEVICES:
            violations.append(f"{park.key}: times_activated {stored['license']['times_activated']} for {bound}")
        used = stored["license"].get("consumption", {}).get("*", {}).get("used", 0)
        if used != park.consumed:
            violations.append(f"{park.key}: used {used} != {park.consumed} acknowledged")
    pool = vendor("GET", f"/v1/licenses/{_pool['key']}?limit=1000")
    leases = [d for d in pool["devices"] if d.get("lease_expires_at")]
    if len(leases) > SEATS or pool["floating"]["seats_held"] != len(leases):
        violations.append(f"pool: {len(leases)} leases on {SEATS} seats, {pool['floating']['seats_held']} counted")
    out = os.environ.get("LOAD_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"unexpected": _unexpected, "violations": violations, "parks": len(_parks)}, f)
