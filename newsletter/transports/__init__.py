"""Transports: the one way mail leaves, an interface and a small module per provider.

Takes in ``Envelope`` values (a complete message for one recipient, made by
``authoring.message``). Hands back one ``Result`` per envelope: sent, failed
for now (worth a retry) or failed for good. Sending, proofs and sign-up
confirmations all go out this way; SMTP, an outbox folder and each
provider's HTTP API sit behind the same ``Transport.send_many``.

A provider is its settings and its module. config.py declares the settings
(``provider=<name>``: names, defaults, what a publication's ``sending:``
block may set), which makes ``<name>`` a TRANSPORT value. Its module here,
``transports.<name>``, holds the ``Transport`` subclass that says ``TRANSPORT =
"<name>"`` and declares the rest: ``from_settings`` (how one is made),
``account_key`` (which account the shared rate limiter counts its mail
against) and ``webhook`` (its module in ``feedback/webhooks/``, if it has
one). A module is imported only when its transport is asked for; SES
imports boto3 only when one is made.
"""

import importlib
from functools import lru_cache

from newsletter.addresses import local_part_is_ascii
from newsletter.config import TRANSPORTS, Settings

from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, Envelope, Result, Transport, TransportError

__all__ = ["Envelope", "Result", "Transport", "TransportError", "SENT", "TEMPORARY", "PERMANENT", "TRANSPORTS",
           "account_of", "make_transport", "transport_class", "why_never_delivered"]


@lru_cache(maxsize=None)  # a few names; asked for each address an import checks (why_never_delivered)
def transport_class(name: str) -> type[Transport]:
    """The class a TRANSPORT value names: the one in ``newsletter.transports.<name>`` that says so."""
    if name not in TRANSPORTS:
        raise TransportError(f"unknown transport {name!r}")
    module = importlib.import_module(f"newsletter.transports.{name}")
    found = [value for value in vars(module).values()
             if isinstance(value, type) and issubclass(value, Transport) and value.__dict__.get("TRANSPORT") == name]
    if len(found) != 1:
        raise TransportError(f"{module.__name__} should have one Transport class with TRANSPORT = {name!r}")
    return found[0]


def make_transport(settings: Settings) -> Transport:
    """The transport the settings name."""
    return transport_class(settings.transport).from_settings(settings)


def account_of(settings: Settings, block) -> str:
    """The account a publication's mail is counted against: the rate-limit key.

    Set by ``sending.account`` (``block``, its ``SendingBlock``); otherwise
    RATE_LIMIT_ACCOUNT, when the publication logs in as the environment does
    (``settings`` are its lane's); otherwise made by its transport from who
    logs in (host and user, or a short hash of the API key), so two
    publications with the same credentials share a limit and two others never do.
    """
    if block.account:
        return block.account
    if settings.rate_limit_account:
        return settings.rate_limit_account
    return transport_class(settings.transport).account_key(settings)


def why_never_delivered(transport: str | Transport, address: str) -> str:
    """Why mail to ``address`` (stored form) can never leave by this transport
    (a TRANSPORT value or a transport); "" when it can. The one rule for
    refusing an address at import and sign-up and for failing a row as
    unsendable at send time."""
    cls = transport if isinstance(transport, Transport) else transport_class(transport)
    if not local_part_is_ascii(address) and not cls.utf8_local_parts:
        return (f"{address} has letters beyond ASCII before the @, and {cls.name} cannot send to such an "
                "address (it has no SMTPUTF8)")
    return ""
