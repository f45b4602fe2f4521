"""Lanes: each publication's mail leaves by its own transport, account, limit and keys.

Takes in a stored publication and hands on its ``Lane``: the settings its
messages are made with (links, VERP, List-Id, as ``store.publications.settings_for``
lays its sending block over the environment's), the transport that carries
them, the rate limiter of its account, and its DKIM signer. A worker keeps
one lane per publication, made on first use and closed at shutdown; the
limiter is shared by every lane of one account, in the process and (through
Redis) across workers, so two publications of one account share its limit
and two accounts never do.

A publication that sets no transport of its own uses the worker's
(the environment's), but still its own links, bounce domain and keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from newsletter.config import Settings
from newsletter.authoring.sending_block import SendingBlock, lane_settings
from newsletter.sending import dkim
from newsletter.sending.ratelimit import AccountLimits, limiter_for
from newsletter.store.models import PublicationRow
from newsletter.store.publications import sending_block
from newsletter.transports import Transport, account_of, make_transport

log = logging.getLogger(__name__)


@dataclass
class Lane:
    """How one publication's mail leaves this worker."""

    slug: str
    settings: Settings  # the environment's, with the publication's sending block over it
    transport: Transport
    limiter: object
    account: str
    block: SendingBlock
    own_transport: bool  # made for this lane (closed with it), not the worker's
    # The last signer chosen, and from when until when it is the one (asked once a message).
    _signing: tuple[datetime, datetime, object] | None = field(default=None, init=False, repr=False)

    @property
    def transport_name(self) -> str:
        return self.settings.transport

    def signer(self, now: datetime):
        """What signs a message made at ``now`` (None: no DKIM). Keys rotate by
        ``active_from``: from that moment the new key of a type signs, the old one nothing."""
        if not self.block.dkim:
            return dkim.signer_for(self.settings)
        if self._signing is not None and self._signing[0] <= now < self._signing[1]:
            return self._signing[2]
        specs = key_specs(self.slug, self.block)
        signer = dkim.signer_for_keys(specs, now)
        starts = [spec.active_from for spec in specs if spec.active_from is not None]
        self._signing = (max((t for t in starts if t <= now), default=_ALWAYS[0]),
                         min((t for t in starts if t > now), default=_ALWAYS[1]), signer)
        return signer


_ALWAYS = (datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc))


def key_specs(slug: str, block: SendingBlock) -> tuple[dkim.KeySpec, ...]:
    """The publication's DKIM keys as the signer takes them, each saying where it was set."""
    return tuple(
        dkim.KeySpec(key.selector, key.domain, key_file=key.key_file, key_env=key.key_env,
                     active_from=key.active_from, where=f"publication '{slug}', sending.dkim[{number}]")
        for number, key in enumerate(block.dkim, start=1)
    )


def limiter_for_account(settings: Settings, account: str):
    """The shared limiter of one account (Redis when configured): per second,
    hour and day, as the publication's settings (or the environment's) say, and
    slowed for every worker when the provider throttles the account."""
    return limiter_for(settings, AccountLimits(account, per_second=settings.rate_limit_per_second,
                                               per_hour=settings.rate_limit_per_hour,
                                               per_day=settings.rate_limit_per_day))


class Lanes:
    """One worker's lanes, one per publication, made lazily and closed together.

    ``transport`` and ``limiter``, when given, are the worker's own: used by
    publications that set no transport of their own (and by tests that bring
    a transport).
    """

    def __init__(self, settings: Settings, transport: Transport | None = None, limiter=None):
        self.settings = settings
        self._worker_transport = transport
        self._worker_limiter = limiter
        self._lanes: dict[int, tuple[str, Lane]] = {}
        self._limiters: dict[str, object] = {}

    @property
    def worker_transport(self) -> Transport:
        if self._worker_transport is None:
            self._worker_transport = make_transport(self.settings)
        return self._worker_transport

    def lane(self, publication: PublicationRow) -> Lane:
        """The publication's lane; remade when its stored sending block changed.

        Reads the secrets it names: a missing one raises ConfigError naming
        the publication and the field.
        """
        stamp = json.dumps(publication.sending or {}, sort_keys=True)
        known = self._lanes.get(publication.id)
        if known is not None and known[0] == stamp:
            return known[1]
        if known is not None:
            self._close(known[1])
        lane = self._make(publication)
        self._lanes[publication.id] = (stamp, lane)
        return lane

    def _make(self, publication: PublicationRow) -> Lane:
        block = sending_block(publication)
        settings = lane_settings(self.settings, block, publication.slug, secrets=True)
        if block.dkim:  # every key is read and checked now, the ones still to come too
            dkim.signer_for_keys(key_specs(publication.slug, block), datetime.now(timezone.utc))
        account = account_of(settings, block)
        if not block.sets_transport:
            transport, own = self.worker_transport, False
            # A limiter the worker was given keeps its own account's name.
            account = getattr(self._worker_limiter, "account", None) or account
            limiter = self._worker_limiter or self._limiter(settings, account, block)
        else:
            transport, own = make_transport(settings), True
            limiter = self._limiter(settings, account, block)
        log.info("publication %s sends through %s (account %s)", publication.slug, settings.transport, account)
        return Lane(publication.slug, settings, transport, limiter, account, block, own)

    def _limiter(self, settings: Settings, account: str, block: SendingBlock):
        if account not in self._limiters:
            self._limiters[account] = limiter_for_account(settings, account)
        return self._limiters[account]

    def _close(self, lane: Lane) -> None:
        if lane.own_transport:
            lane.transport.close()

    def close(self) -> None:
        """Close every transport this worker opened (at shutdown)."""
        for _, lane in self._lanes.values():
            self._close(lane)
        self._lanes.clear()
        if self._worker_transport is not None:
            self._worker_transport.close()



def sending_summary(settings: Settings, publication: PublicationRow) -> list[tuple[str, str]]:
    """(setting, shown value) of how a publication's mail leaves, for the CLI and
    the ops page. A secret is shown as where it is and "set" or "not set": never its value."""
    block = sending_block(publication)
    own = lane_settings(settings, block, publication.slug, secrets=False)
    mine = "" if block.sets_transport else " (the environment's)"
    rows = [
        ("links (base_url)", own.base_url + ("" if block.base_url else " (BASE_URL)")),
        ("web copies", publication.web_base_url),
        ("transport", own.transport + mine),
        ("account", account_of(own, block) + ("" if block.account else " (made from the transport)")),
    ]
    if own.transport == "smtp":
        rows.append(("smtp", f"{own.smtp_host}:{own.smtp_port} {own.smtp_security}"
                             + (f" as {own.smtp_username}" if own.smtp_username else "")))
    connections = {"smtp": own.smtp_connections, "ses": own.ses_connections}.get(own.transport)
    if connections:
        rows.append(("connections", str(connections)))
    rate = [f"{own.rate_limit_per_second:g}/s" if own.rate_limit_per_second else "",
            f"{block.per_hour}/hour" if block.per_hour else "", f"{block.per_day}/day" if block.per_day else ""]
    rows.append(("rate", ", ".join(r for r in rate if r) or "unlimited"))
    rows.append(("bounce domain", own.bounce_domain or "none (return path: the From address)"))
    rows.append(("List-Id domain", block.list_id_domain or publication.from_email.rsplit("@", 1)[-1] + " (From)"))
    rows.append(("Feedback-ID sender", block.feedback_id_sender or "newsletter"))
    for ref in block.secret_refs():
        rows.append((ref.field, f"{ref.named}: {'set' if ref.is_set() else 'not set'}"))
    for key in block.dkim:
        when = f", from {key.active_from:%Y-%m-%d %H:%M} UTC" if key.active_from else ""
        rows.append((f"dkim {key.selector}", f"d={key.domain}{when}"))
    if not block.dkim:
        rows.append(("dkim", f"{settings.dkim_selector} (DKIM_*)" if settings.dkim_private_key_path else "not signed"))
    return rows
