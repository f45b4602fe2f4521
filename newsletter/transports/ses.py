"""Amazon SES (API v2 SendEmail) through boto3: one call per message, raw bytes.

SES takes the complete message we build (``Content.Raw``), so subscribers get
the same bytes as over SMTP; SES adds its own DKIM signature and replaces the
Message-ID with its own (the ledger keeps both). Calls for a chunk go out
from a small thread pool (``SES_CONNECTIONS``); the boto3 client is made once
and is safe to share between threads. botocore's own retries are off: a
throttled message comes back TEMPORARY and the send ledger retries it later,
so one message is never sent twice by a retry nobody recorded.

Outcomes: throttling (TooManyRequestsException, Throttling) and 5xx are
TEMPORARY, throttling also ``throttled`` (calls of the chunk not yet made are
then held back, untried); MessageRejected and other 4xx PERMANENT; a paused or suspended
account, refused credentials or an unverified MAIL FROM domain are
TEMPORARY, since the recipients are not at fault (the error says what to fix,
and the send's error budget pauses it); no answer is TEMPORARY, uncertain if
the request had gone out. Needs the ``ses`` extra (boto3).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError
from newsletter.transports.http import USER_AGENT, retry_after_seconds, status_for

log = logging.getLogger(__name__)

THROTTLING = {"TooManyRequestsException", "Throttling", "ThrottlingException"}
REJECTED = {"MessageRejected", "BadRequestException"}
# The account or its settings are at fault, not the recipient.
_ACCOUNT_TROUBLE = {
    "SendingPausedException": "sending is paused for this SES account or configuration set",
    "AccountSuspendedException": "the SES account is suspended",
    "MailFromDomainNotVerifiedException": "verify the MAIL FROM domain in SES",
    "NotFoundException": "check SES_CONFIGURATION_SET",
    "UnrecognizedClientException": "check SES_ACCESS_KEY_ID and SES_SECRET_ACCESS_KEY",
    "InvalidClientTokenId": "check SES_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "check SES_SECRET_ACCESS_KEY",
    "AccessDeniedException": "give these credentials ses:SendEmail",
}


class SesTransport(Transport):
    TRANSPORT = "ses"  # its settings: the ses group of config.py
    webhook = "ses_sns"  # its events arrive through SNS: feedback/webhooks/ses_sns.py
    name = "Amazon SES"
    # "Amazon SES does not support the SMTPUTF8 extension": a local part must be 7-bit ASCII.
    utf8_local_parts = False

    def __init__(self, region: str, *, access_key_id: str = "", secret_access_key: str = "",
                 endpoint_url: str = "", configuration_set: str = "", connections: int = 8,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0):
        if not region:
            raise TransportError("TRANSPORT=ses needs SES_REGION, the AWS region of your SES account (e.g. eu-west-1)")
        if connections < 1:
            raise TransportError(f"SES_CONNECTIONS={connections}: must be at least 1")
        self.configuration_set = configuration_set
        self.connections = connections
        self.client = _client(region, access_key_id, secret_access_key, endpoint_url, connections,
                              connect_timeout, read_timeout)
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings) -> SesTransport:
        return cls(
            settings.ses_region,
            access_key_id=settings.ses_access_key_id,
            secret_access_key=settings.ses_secret_access_key,
            endpoint_url=settings.ses_endpoint_url,
            configuration_set=settings.ses_configuration_set,
            connections=settings.ses_connections,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
        )

    @staticmethod
    def account_key(settings) -> str:
        return f"ses:{settings.ses_region or 'default'}:{settings.ses_access_key_id or 'default'}"

    def send_many(self, envelopes: Sequence[Envelope]) -> list[Result]:
        throttle: list[Result] = []  # the first throttled answer of this chunk

        def send(envelope: Envelope) -> Result:
            if throttle:
                return throttle[0].not_tried(envelope)
            result = self.send_one(envelope)
            if result.throttled:
                throttle.append(result)
            return result

        if len(envelopes) <= 1 or self.connections == 1:
            return [send(e) for e in envelopes]
        return list(self._threads().map(send, envelopes))

    def send_one(self, envelope: Envelope) -> Result:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.send_email(**self.request(envelope))
        except ClientError as exc:
            return _refused(envelope, exc)
        except BotoCoreError as exc:
            return _no_answer(envelope, exc)
        return Result(envelope.delivery_id, SENT, provider_message_id=answer.get("MessageId", ""), code=200)

    def request(self, envelope: Envelope) -> dict:
        request = {
            "Destination": {"ToAddresses": [envelope.recipient]},
            "Content": {"Raw": {"Data": envelope.message}},
            # Comes back in SES events, to find the ledger row.
            "EmailTags": [{"Name": "delivery_id", "Value": str(envelope.delivery_id)}],
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        return request

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="ses-call")
        return self._pool


def _client(region, access_key_id, secret_access_key, endpoint_url, connections, connect_timeout, read_timeout):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise TransportError("TRANSPORT=ses needs boto3: pip install 'newsletter-pipeline[ses]'") from None
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=connections,
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra=USER_AGENT,
    )
    return boto3.session.Session().client(
        "sesv2",
        region_name=region,
        endpoint_url=endpoint_url or None,
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
        config=config,
    )


def _refused(envelope: Envelope, exc) -> Result:
    error = exc.response.get("Error", {})
    name = error.get("Code", "")
    http_status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
    text = f"SES answered {http_status} {name}: {error.get('Message', '')}"
    if name in THROTTLING:
        retry_after = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")
        if retry_after:
            text += f" (SES asks to retry after {retry_after} seconds)"
        return Result(envelope.delivery_id, TEMPORARY, code=http_status, error=text[:2000], throttled=True,
                      retry_after=retry_after_seconds(retry_after))
    elif name in _ACCOUNT_TROUBLE:
        status, text = TEMPORARY, f"{text} ({_ACCOUNT_TROUBLE[name]})"
    elif name in REJECTED:
        status = PERMANENT
    else:
        status = status_for(http_status)
    return Result(envelope.delivery_id, status, code=http_status, error=text[:2000])


def _no_answer(envelope: Envelope, exc) -> Result:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return Result(envelope.delivery_id, TEMPORARY,
                      error="no AWS credentials: set SES_ACCESS_KEY_ID and SES_SECRET_ACCESS_KEY, or give the worker a role")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return Result(envelope.delivery_id, TEMPORARY, error=f"cannot connect to SES: {exc}")
    log.warning("SES call for delivery %s failed after it went out: %s", envelope.delivery_id, exc)
    return Result(envelope.delivery_id, TEMPORARY, uncertain=True,
                  error=f"no answer from SES after the request went out: {exc}")
