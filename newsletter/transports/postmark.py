"""Postmark's batch API: up to 500 complete messages per call.

Postmark has no merge language for raw content, so each message of the batch
is personalised here, the same way ``MessageTemplate.build`` does it (values
HTML-escaped in the HTML, as typed in the text). Messages go to the configured
message stream, "broadcast" by default, as Postmark wants for newsletters.

The answer is 200 with one entry per message, in order: ``ErrorCode`` 0 and a
``MessageID`` for an accepted one, an error code otherwise. 406 says Postmark
holds the address as inactive (a hard bounce or a spam complaint): that is a
permanent failure reported like a hard bounce, so the address is suppressed
here too. A whole call is refused with 401 (the token), 422, 429 or 5xx.
"""

from __future__ import annotations

import json
from email.headerregistry import Address

from newsletter.authoring import placeholders
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result
from newsletter.transports.http import (
    HttpApi,
    HttpTransport,
    Outcome,
    check_batch_size,
    json_or_none,
    key_fingerprint,
    personal_headers,
    require,
    shared_headers,
)

MAX_MESSAGES = 500
MAX_PAYLOAD_BYTES = 45 * 1024 * 1024  # Postmark takes 50 MB a call; keep a margin
INACTIVE_RECIPIENT = 406
# The account or server cannot send just now; the recipients are not at fault.
_NOT_THE_RECIPIENTS_FAULT = {
    10: "check POSTMARK_SERVER_TOKEN",
    100: "Postmark is in maintenance",
    400: "confirm the sender signature in Postmark",
    401: "confirm the sender signature in Postmark",
    405: "the Postmark account may not send (credits?)",
    412: "the Postmark account is pending",
    413: "the Postmark account may not send",
    429: "Postmark's rate limit",
}


class PostmarkTransport(HttpTransport):
    TRANSPORT = "postmark"  # its settings: the postmark group of config.py
    webhook = "postmark"  # feedback/webhooks/postmark.py
    name = "Postmark"
    utf8_local_parts = False  # not documented as taking a local part beyond ASCII
    credentials = "POSTMARK_SERVER_TOKEN"

    def __init__(self, server_token: str, *, api_url: str = "https://api.postmarkapp.com",
                 message_stream: str = "broadcast", batch_size: int = MAX_MESSAGES,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0):
        require(server_token, "POSTMARK_SERVER_TOKEN", "postmark")
        check_batch_size("POSTMARK_BATCH_SIZE", batch_size, MAX_MESSAGES)
        self.batch_size = batch_size
        self.message_stream = message_stream
        super().__init__(HttpApi(
            "Postmark", api_url, headers={"X-Postmark-Server-Token": server_token},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        ))

    @classmethod
    def from_settings(cls, settings) -> PostmarkTransport:
        return cls(
            settings.postmark_server_token,
            api_url=settings.postmark_api_url,
            message_stream=settings.postmark_message_stream,
            batch_size=settings.postmark_batch_size,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
        )

    @staticmethod
    def account_key(settings) -> str:
        return f"postmark:{key_fingerprint(settings.postmark_server_token)}"

    def send_batch(self, batch: list[Envelope]) -> list[Result]:
        results: list[Result] = []
        for part, body in _calls(batch, [json.dumps(self.message(e)) for e in batch]):
            results.extend(self._post(part, body))
        return results

    def _post(self, batch: list[Envelope], body: bytes) -> list[Result]:
        response = self.api.post("/email/batch", data=body, headers={"Content-Type": "application/json"})
        if isinstance(response, Outcome):
            return response.results(batch)
        answer = json_or_none(response)
        if response.status_code != 200:
            message = answer.get("Message", "") if isinstance(answer, dict) else ""
            return self.refused(response, message).results(batch)
        entries = answer if isinstance(answer, list) else []
        return [_result(envelope, entries[i] if i < len(entries) else None) for i, envelope in enumerate(batch)]

    def message(self, envelope: Envelope) -> dict:
        template = envelope.template
        name, values = template.values_for(envelope.person)
        text, body_html = template.bodies()
        headers = {**shared_headers(template), **personal_headers(envelope)}
        message = {
            "From": str(Address(template.from_name, addr_spec=template.from_email)),
            "To": str(Address(name, addr_spec=envelope.recipient)),
            "Subject": template.full_subject,
            "TextBody": placeholders.fill(text, values, escape_html=False),
            "HtmlBody": placeholders.fill(body_html, values, escape_html=True),
            "Headers": [{"Name": k, "Value": v} for k, v in headers.items()],
            "MessageStream": self.message_stream,
            "Metadata": {"delivery_id": str(envelope.delivery_id)},
        }
        if template.reply_to:
            message["ReplyTo"] = template.reply_to
        return message


def _calls(batch: list[Envelope], messages: list[str]):
    """Split a batch so that no call's body passes Postmark's size limit."""
    start, size = 0, 2
    for index, message in enumerate(messages):
        length = len(message.encode("utf-8")) + 1
        if index > start and size + length > MAX_PAYLOAD_BYTES:
            yield batch[start:index], _array(messages[start:index])
            start, size = index, 2
        size += length
    if start < len(messages):
        yield batch[start:], _array(messages[start:])


def _array(messages: list[str]) -> bytes:
    return ("[" + ",".join(messages) + "]").encode("utf-8")


def _result(envelope: Envelope, entry) -> Result:
    if not isinstance(entry, dict):
        # Postmark answered for fewer messages than it was given.
        return Outcome(TEMPORARY, code=200, uncertain=True,
                       error="Postmark's answer has no entry for this message").result(envelope)
    code = entry.get("ErrorCode")
    text = f"Postmark error {code}: {entry.get('Message', '')}"[:2000]
    if code == 0:
        return Result(envelope.delivery_id, SENT, provider_message_id=str(entry.get("MessageID", "")), code=200)
    if code == INACTIVE_RECIPIENT:
        # Reported like a hard bounce ("5.1.x") so the sender suppresses the address too.
        return Result(envelope.delivery_id, PERMANENT, code=406, enhanced_code="5.1.0",
                      error=text + " (Postmark holds this address as inactive: a hard bounce or spam complaint)")
    if code in _NOT_THE_RECIPIENTS_FAULT:
        return Result(envelope.delivery_id, TEMPORARY, code=code, error=f"{text} ({_NOT_THE_RECIPIENTS_FAULT[code]})")
    return Result(envelope.delivery_id, PERMANENT, code=code, error=text)
