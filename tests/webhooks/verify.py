"""Verifies recorded deliveries with the `standardwebhooks` package (the specification's own
Python implementation, not Keygate's code): prints, as JSON, the webhook-id of each delivery whose
signature verifies with the secret given, and the number that did not."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, recorded = sys.argv[1], sys.argv[2]
webhook = Webhook(secret)
verified, refused = [], 0
with open(recorded) as f:
    for line in f:
        delivery = json.loads(line)
        try:
            payload = webhook.verify(delivery["body"], delivery["headers"])
        except WebhookVerificationError:
            refused += 1
            continue
        assert payload["id"] == delivery["headers"]["webhook-id"], "the id signed is the event's"
        verified.append({"id": delivery["headers"]["webhook-id"], "type": payload["type"], "answered": delivery["answered"]})
print(json.dumps({"verified": verified, "refused": refused}))
