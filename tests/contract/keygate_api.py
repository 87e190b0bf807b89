"""Requests to the local server under test, for hooks.py and edge_cases.py (KEYGATE_URL and
KEYGATE_ADMIN_TOKEN set by tests/contract/schemathesis.sh)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

BASE_URL = os.environ.get("KEYGATE_URL", "")
ADMIN_TOKEN = os.environ.get("KEYGATE_ADMIN_TOKEN", "")


def call(method: str, path: str, body: Any = None, admin: bool = False, headers: dict | None = None) -> tuple[int, Any]:
    """Sends a JSON request (with the admin token when `admin`); returns the status and the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE_URL + path, data=data, method=method, headers=headers or {})
    if admin:
        request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
