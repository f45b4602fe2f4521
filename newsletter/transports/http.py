"""What every email provider's HTTP API transport shares.

A provider module is little more than three steps: build the payload for a
batch of envelopes, post it, and read each recipient's outcome from the answer.
Everything else lives here:

- one ``requests.Session`` per transport, so connections are pooled and reused
  between calls, with a connect and a read timeout on every request;
- what an answer that is not a success means for the recipients of the call:
  429 and 5xx are TEMPORARY (with the provider's Retry-After in the error),
  429 is also a throttle (``throttled``, with ``retry_after``) and the calls
  left in the chunk are held back untried,
  401 and 403 are TEMPORARY too (the key is wrong, not the recipients; the
  error says which setting to check, and the send's error budget pauses it),
  any other 4xx is PERMANENT;
- no answer at all is TEMPORARY, and *uncertain* when the request had gone out
  (a read timeout, a dropped line): the provider may have taken it;
- batches: consecutive envelopes of one template, at most ``batch_size``, each
  address at most once (providers key recipient data by address);
- the issue as the provider's merge language needs it: placeholders replaced
  by the provider's tags, with separate tags for HTML (values escaped) and text
  (values as they are), since a provider applies one substitution everywhere.
"""

from __future__ import annotations

import hashlib
import html
import logging
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from newsletter.authoring import placeholders
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError

log = logging.getLogger(__name__)

USER_AGENT = "newsletter-pipeline"


# --- what an answer means ------------------------------------------------------


def status_for(http_status: int) -> str:
    """TEMPORARY or PERMANENT for an HTTP status that is not a success."""
    if http_status == 429 or http_status >= 500 or http_status in (401, 403, 408):
        return TEMPORARY
    return PERMANENT


def retry_after_seconds(value: str | None) -> float | None:
    """The provider's Retry-After (seconds, or an HTTP date) in seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def retry_after_text(value: str | None) -> str:
    """The provider's Retry-After, in words for the ledger's error column."""
    seconds = retry_after_seconds(value)
    if seconds is None:
        return ""
    return f" (the provider asks to retry after {int(seconds)} seconds)"


@dataclass(frozen=True)
class Outcome:
    """One outcome shared by every envelope of a call."""

    status: str
    error: str = ""
    code: int | None = None
    enhanced_code: str = ""
    provider_message_id: str = ""
    uncertain: bool = False
    throttled: bool = False
    retry_after: float | None = None

    def result(self, envelope: Envelope) -> Result:
        return Result(
            envelope.delivery_id,
            self.status,
            provider_message_id=self.provider_message_id,
            code=self.code,
            enhanced_code=self.enhanced_code,
            error=self.error,
            uncertain=self.uncertain,
            throttled=self.throttled,
            retry_after=self.retry_after,
        )

    def results(self, envelopes: Sequence[Envelope]) -> list[Result]:
        return [self.result(e) for e in envelopes]


def sent(provider_message_id: str, code: int) -> Outcome:
    return Outcome(SENT, code=code, provider_message_id=provider_message_id)


# --- the session ------------------------------------------------------------------


class HttpApi:
    """One provider's API: a pooled session, its base URL, auth and timeouts."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        connections: int = 4,
    ):
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})})
        self.session.auth = auth
        # A failed connect sent nothing, so one more try is safe; a POST that
        # got as far as the provider is never repeated here (the ledger does it).
        retries = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, raise_on_status=False)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=connections, max_retries=retries)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def post(self, path: str, **request) -> requests.Response | Outcome:
        """The provider's answer, or a TEMPORARY Outcome when there was none."""
        url = self.base_url + path
        try:
            return self.session.post(url, timeout=self.timeout, **request)
        except requests.RequestException as exc:
            log.warning("%s API call failed: %s", self.provider, exc)
            return no_answer(self.provider, url, exc)

    def close(self) -> None:
        self.session.close()


def no_answer(provider: str, url: str, exc: requests.RequestException) -> Outcome:
    if _nothing_was_sent(exc):
        return Outcome(TEMPORARY, error=f"cannot connect to {provider} at {url}: {_reason(exc)}")
    return Outcome(
        TEMPORARY,
        error=f"no answer from {provider} at {url} after the request went out: {_reason(exc)}",
        uncertain=True,
    )


def _nothing_was_sent(exc: requests.RequestException) -> bool:
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.InvalidURL)):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


def _reason(exc: Exception) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return str(reason or exc or type(exc).__name__)[:300]


def refused(provider: str, response: requests.Response, message: str, credentials: str) -> Outcome:
    """The Outcome for every recipient of a call the provider answered with an error."""
    code = response.status_code
    text = f"{provider} answered {code}: {message or response.reason}"
    if code in (401, 403):
        text += f"; check {credentials}"
    if code == 429 or code >= 500:
        text += retry_after_text(response.headers.get("Retry-After"))
    if code == 429:
        return Outcome(TEMPORARY, error=text[:2000], code=code, throttled=True,
                       retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    return Outcome(status_for(code), error=text[:2000], code=code)


def json_or_none(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None


# --- the transport ----------------------------------------------------------------


class HttpTransport(Transport):
    """A provider API that takes a batch of recipients per call.

    Subclasses set ``name``, ``batch_size`` and ``credentials`` (the settings
    to check when the key is refused) and implement ``send_batch``.
    """

    batch_size = 1
    credentials = ""

    def __init__(self, api: HttpApi):
        self.api = api

    @property
    def preferred_chunk(self) -> int:
        return self.batch_size

    def send_many(self, envelopes: Sequence[Envelope]) -> list[Result]:
        results: list[Result] = []
        throttle: Result | None = None
        for batch in batches(envelopes, self.batch_size):
            if throttle is not None:  # the provider said to slow down: no more calls now
                results.extend(throttle.not_tried(e) for e in batch)
                continue
            answers = self.send_batch(batch)
            throttle = next((r for r in answers if r.throttled), None)
            results.extend(answers)
        return results

    def send_batch(self, batch: list[Envelope]) -> list[Result]:
        raise NotImplementedError

    def refused(self, response: requests.Response, message: str = "") -> Outcome:
        return refused(self.name, response, message, self.credentials)

    def close(self) -> None:
        self.api.close()


def batches(envelopes: Sequence[Envelope], size: int) -> Iterator[list[Envelope]]:
    """Consecutive envelopes of one template, at most ``size``, no address twice."""
    batch: list[Envelope] = []
    addresses: set[str] = set()
    for envelope in envelopes:
        if envelope.template is None or envelope.person is None:
            raise TransportError(
                "a provider API transport needs envelopes made by MessageTemplate.envelope "
                f"(delivery {envelope.delivery_id} has only the message bytes)"
            )
        address = envelope.recipient.lower()
        if batch and (len(batch) >= size or envelope.template is not batch[0].template or address in addresses):
            yield batch
            batch, addresses = [], set()
        batch.append(envelope)
        addresses.add(address)
    if batch:
        yield batch


def check_batch_size(setting: str, value: int, limit: int) -> None:
    if not 1 <= value <= limit:
        raise TransportError(f"{setting}={value}: the provider takes 1 to {limit} recipients per call")


def key_fingerprint(secret: str) -> str:
    """Tells API keys apart, in an account key, without saying anything about them."""
    return hashlib.sha256(secret.encode()).hexdigest()[:10] if secret else "none"


def require(value: str, setting: str, provider: str) -> None:
    if not value:
        raise TransportError(f"TRANSPORT={provider} needs {setting}: set it to the key from your {provider} account")


# --- the issue in a provider's merge language ----------------------------------


@dataclass(frozen=True)
class MergeContent:
    """A template's bodies with provider tags in place of placeholders."""

    text: str
    html: str
    text_names: frozenset[str]  # the placeholders the text uses
    html_names: frozenset[str]


def merge_content(template, tag: Callable[[str, str], str]) -> MergeContent:
    """The bodies with each ``%%name%%`` replaced by ``tag(name, "text"|"html")``."""
    text, body_html = template.bodies()
    return MergeContent(
        text=placeholders.PATTERN.sub(lambda m: tag(m.group(1), "text"), text),
        html=placeholders.PATTERN.sub(lambda m: tag(m.group(1), "html"), body_html),
        text_names=frozenset(placeholders.find(text)),
        html_names=frozenset(placeholders.find(body_html)),
    )


def merge_values(content: MergeContent, values: dict[str, str], key: Callable[[str, str], str]) -> dict[str, str]:
    """One recipient's substitutions: HTML-escaped for the HTML, as they are for the text."""
    merged = {key(name, "text"): values[name] for name in content.text_names}
    merged.update({key(name, "html"): html.escape(values[name], quote=True) for name in content.html_names})
    return merged


def shared_headers(template) -> dict[str, str]:
    """The headers every recipient of a send gets (as MessageTemplate.build writes them)."""
    headers = {
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": template.list_id,
        "Precedence": "bulk",
    }
    if template.feedback_id:
        headers["Feedback-ID"] = template.feedback_id
    return headers


def personal_headers(envelope: Envelope) -> dict[str, str]:
    """The headers that differ per recipient."""
    return {
        "List-Unsubscribe": envelope.template.list_unsubscribe(envelope.person.unsubscribe_url),
        "Message-ID": envelope.person.message_id,
    }
