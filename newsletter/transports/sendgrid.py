"""SendGrid's v3 Mail Send API: one call per up to 1,000 recipients.

The issue goes once per call; each recipient is a *personalization* with its
own ``to``, headers (List-Unsubscribe, Message-ID), substitutions and
``custom_args`` (the ledger row, for the event webhook). SendGrid applies one
substitution table to the subject and both bodies, so HTML and text have tags
of their own: ``%%name.html%%`` gets the escaped value, ``%%name.text%%`` the
value as typed.

202 means every recipient of the call was accepted; ``X-Message-Id`` is the
call's id, the prefix of each recipient's ``sg_message_id`` in events. A 400
names the offending field; when that is a personalization, only that
recipient fails for good and the others are retried without it.
"""

from __future__ import annotations

import re

from newsletter.transports.base import PERMANENT, TEMPORARY, Envelope, Result
from newsletter.transports.http import (
    HttpApi,
    HttpTransport,
    MergeContent,
    Outcome,
    check_batch_size,
    json_or_none,
    key_fingerprint,
    merge_content,
    merge_values,
    personal_headers,
    require,
    sent,
    shared_headers,
)

MAX_PERSONALIZATIONS = 1000
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def merge_tag(name: str, part: str) -> str:
    return f"%%{name}.{part}%%"


class SendGridTransport(HttpTransport):
    TRANSPORT = "sendgrid"  # its settings: the sendgrid group of config.py
    webhook = "sendgrid"  # feedback/webhooks/sendgrid.py
    name = "SendGrid"
    utf8_local_parts = False  # refuses a local part beyond ASCII ("501 Recipient syntax error")
    credentials = "SENDGRID_API_KEY"

    def __init__(self, api_key: str, *, api_url: str = "https://api.sendgrid.com", batch_size: int = 1000,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0):
        require(api_key, "SENDGRID_API_KEY", "sendgrid")
        check_batch_size("SENDGRID_BATCH_SIZE", batch_size, MAX_PERSONALIZATIONS)
        self.batch_size = batch_size
        super().__init__(HttpApi(
            "SendGrid", api_url, headers={"Authorization": f"Bearer {api_key}"},
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        ))
        self._content: tuple[object, MergeContent] | None = None

    @classmethod
    def from_settings(cls, settings) -> SendGridTransport:
        return cls(
            settings.sendgrid_api_key,
            api_url=settings.sendgrid_api_url,
            batch_size=settings.sendgrid_batch_size,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
        )

    @staticmethod
    def account_key(settings) -> str:
        return f"sendgrid:{key_fingerprint(settings.sendgrid_api_key)}"

    def send_batch(self, batch: list[Envelope]) -> list[Result]:
        response = self.api.post("/v3/mail/send", json=self.payload(batch))
        if isinstance(response, Outcome):
            return response.results(batch)
        if response.status_code in (200, 202):
            return sent(response.headers.get("X-Message-Id", ""), response.status_code).results(batch)
        errors = _errors(json_or_none(response))
        if response.status_code == 400:
            return self._bad_request(batch, response, errors)
        return self.refused(response, _describe(errors)).results(batch)

    def payload(self, batch: list[Envelope]) -> dict:
        template = batch[0].template
        content = self.content(template)
        payload = {
            "personalizations": [self.personalization(content, e) for e in batch],
            "from": _address(template.from_email, template.from_name),
            "subject": template.full_subject,
            "content": [
                {"type": "text/plain", "value": content.text},
                {"type": "text/html", "value": content.html},
            ],
            "headers": shared_headers(template),
        }
        if template.reply_to:
            payload["reply_to"] = {"email": template.reply_to}
        return payload

    def personalization(self, content: MergeContent, envelope: Envelope) -> dict:
        name, values = envelope.template.values_for(envelope.person)
        return {
            "to": [_address(envelope.recipient, name)],
            "headers": personal_headers(envelope),
            "substitutions": merge_values(content, values, merge_tag),
            "custom_args": {"delivery_id": str(envelope.delivery_id)},
        }

    def content(self, template) -> MergeContent:
        # A worker sends one issue at a time: remember the last one's content.
        if self._content is None or self._content[0] is not template:
            self._content = (template, merge_content(template, merge_tag))
        return self._content[1]

    def _bad_request(self, batch: list[Envelope], response, errors: list[dict]) -> list[Result]:
        blamed = _blamed_personalizations(errors, len(batch))
        whole = self.refused(response, _describe(errors))
        if not blamed:
            return whole.results(batch)
        results = []
        for index, envelope in enumerate(batch):
            if index in blamed:
                results.append(Outcome(PERMANENT, code=400, error=f"SendGrid refused this recipient: {blamed[index]}")
                               .result(envelope))
            else:
                results.append(Outcome(TEMPORARY, code=400, error=(
                    "not sent: SendGrid refused the whole call for another recipient in it "
                    f"({_describe(errors)}); it is retried without that recipient")).result(envelope))
        return results


def _address(email: str, name: str) -> dict:
    return {"email": email, "name": name} if name else {"email": email}


def _errors(body) -> list[dict]:
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _describe(errors: list[dict]) -> str:
    return "; ".join(f"{e.get('field') or 'request'}: {e.get('message', '')}" for e in errors)[:1000]


def _blamed_personalizations(errors: list[dict], count: int) -> dict[int, str]:
    blamed: dict[int, str] = {}
    for error in errors:
        match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
        if match is None:
            return {}  # something about the whole call: every recipient shares it
        index = int(match.group(1))
        if index < count:
            blamed[index] = f"{error.get('field')}: {error.get('message', '')}"
    return blamed
