"""Proofs: a copy marked as a proof, to a few people, outside the ledger."""

from __future__ import annotations

from typing import Sequence

from newsletter.config import Settings
from newsletter.authoring.sending_block import SendingBlock, lane_settings
from newsletter.authoring.message import PROOF_PREFIX, MessageTemplate, Recipient, publication_template
from newsletter.audience.subscribers import checked_address
from newsletter.errors import InputError, Problem
from newsletter.transports import why_never_delivered
from newsletter.transports.base import Result, Transport

PROOF_LINK = "#proof-link-not-active"


def proof_template(rendered) -> MessageTemplate:
    issue = rendered.issue
    return publication_template(
        issue.publication, subject=issue.subject, html=rendered.html, text=rendered.text, subject_prefix=PROOF_PREFIX
    )


def send_proof(settings: Settings, rendered, addresses: Sequence[str], transport: Transport,
               where: str = "--to") -> list[Result]:
    """Send the rendered issue to each address, marked "[PROOF]" in the subject.

    No subscriber, send or ledger row is created or touched; the unsubscribe
    and preferences links of a proof lead nowhere. An address that is not one,
    or that this transport can never send to (``why_never_delivered``, the
    rule imports and sends follow), stops the proof before any copy goes:
    an InputError at ``where``.
    """
    import secrets

    template = proof_template(rendered)
    publication = rendered.issue.publication
    # The publication's own web address (its sending block), as its sends have.
    settings = lane_settings(settings, publication.sending or SendingBlock(), publication.slug, secrets=False)
    checked = [checked_address(a, where=where) for a in addresses]
    for address in checked:
        if never := why_never_delivered(transport, address):
            raise InputError(Problem(where, never, "send the proof to another address; the publication's "
                                                   "subscribers with such an address are not sent the issue either"))
    envelopes = []
    for number, address in enumerate(checked, start=1):
        recipient = Recipient(
            email=address,
            name="",
            message_id=f"<proof.{secrets.token_hex(8)}@{template.domain}>",
            unsubscribe_url=f"{settings.base_url}/{PROOF_LINK}",
            preferences_url=f"{settings.base_url}/{PROOF_LINK}",
            web_url=rendered.issue.web_url,
        )
        envelopes.append(template.envelope(-number, recipient))
    return transport.send_many(envelopes)
