"""A journey's webhook step, received by a loopback endpoint that verifies every call with the
Standard Webhooks reference library (`standardwebhooks` from PyPI), as a receiver would."""

import http.server
import json
import threading
import time

import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import CohortServer, free_port, poll

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """An HTTP endpoint on loopback that keeps each call's headers and raw body."""

    def __init__(self) -> None:
        self.calls: list = []
        calls = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                calls.append({"headers": dict(self.headers.items()), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def admin(cohort: CohortServer, method: str, path: str, body: dict, status: int) -> dict:
    r = requests.request(method, cohort.base_url + path, json=body,
                         headers=cohort.admin_headers(), timeout=10)
    assert r.status_code == status, f"{method} {path} -> {r.status_code}: {r.text}"
    return r.json() if r.text else {}


def test_a_journeys_webhook_verifies_with_the_standard_webhooks_library(cohort: CohortServer,
                                                                         run_id: str):
    receiver = Receiver()
    try:
        channel = f"crm-{run_id}"
        admin(cohort, "PUT", f"/api/v1/channels/{channel}",
              {"provider": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hooks/cohort",
               "secret": SECRET}, 200)
        admin(cohort, "POST", "/api/v1/templates",
              {"key": f"crm-body-{run_id}", "kind": "webhook",
               "source": {"body": '{"plan": "{{ event.plan }}", "name": "{{ first_name | default: \'顾客\' }}"}'}},
              201)
        journey = f"crm-sync-{run_id}"
        admin(cohort, "POST", "/api/v1/journeys",
              {"key": journey, "name": "CRM sync",
               "trigger": {"type": "event", "event": f"Plan Upgraded {run_id}"},
               "steps": [{"id": "hook", "type": "webhook", "channel": channel,
                          "template": f"crm-body-{run_id}"}]}, 201)
        admin(cohort, "POST", f"/api/v1/journeys/{journey}/publish", {}, 200)

        user = f"upgrader-{run_id}"
        for message in (
            {"type": "identify", "userId": user, "traits": {"first_name": "丽"}},
            {"type": "track", "userId": user, "event": f"Plan Upgraded {run_id}",
             "properties": {"plan": "团队版"}},
        ):
            r = requests.post(cohort.base_url + "/v1/batch", json={"batch": [message]},
                              auth=(cohort.write_key, ""), timeout=10)
            assert r.status_code == 200, r.text

        calls = poll(lambda: list(receiver.calls), lambda c: len(c) >= 1, timeout=30,
                     what="the webhook call")
        call = calls[0]
        payload = Webhook(SECRET).verify(call["body"], call["headers"])
        assert payload == {"plan": "团队版", "name": "丽"}, payload
        # The same key as the send's idempotency key: a receiver deduplicates on it.
        assert call["headers"]["webhook-id"], call["headers"]
        # A body changed on the way no longer verifies.
        tampered = json.dumps({"plan": "企业版", "name": "丽"}, ensure_ascii=False).encode()
        try:
            Webhook(SECRET).verify(tampered, call["headers"])
            raise AssertionError("a tampered body verified")
        except WebhookVerificationError:
            pass
        # Exactly one call for the one trigger.
        time.sleep(1.0)
        assert len(receiver.calls) == 1, receiver.calls
    finally:
        receiver.close()
