"""One send's message, ready to be personalised for each of its recipients.

Takes in a send's stored issue and its publication's lane, and hands on each
recipient's ``Envelope``: the message template compiled once per send in each
worker (``message_template``, with its counted links rewritten
once), then for each ledger row the recipient's links and tokens, the
message built from its parts, signed by the lane's DKIM keys, and its
return path (VERP when a bounce domain is set).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from sqlalchemy.orm import Session

from newsletter.audience.tokens import preferences_url, unsubscribe_url
from newsletter.authoring import counted_links as clicks
from newsletter.authoring.header_checks import UnsendableAddress
from newsletter.authoring.message import Envelope, MessageTemplate, Recipient, make_message_id, publication_template
from newsletter.config import Settings
from newsletter.errors import Problem
from newsletter.sending.lanes import Lane, Lanes
from newsletter.sending.links import check_links_allowed
from newsletter.sending.return_path import verp_address
from newsletter.sending.send_record import header_list_of
from newsletter.store import clock
from newsletter.store.models import IssueRow, MailingList, PublicationRow, Send
from newsletter.store.publications import sending_block
from newsletter.transports import why_never_delivered


def message_template(
    issue: IssueRow, publication: PublicationRow, mailing_list: MailingList | None, send_id: int, subject_prefix: str = ""
) -> MessageTemplate:
    """The send's message before anyone's values are in it: List-Id names its
    list (or the publication, for a send to several), Feedback-ID the send."""
    list_name, list_slug = (
        (f"{publication.name}: {mailing_list.name}", f"{mailing_list.slug}.{publication.slug}")
        if mailing_list
        else (publication.name, publication.slug)
    )
    block = sending_block(publication)
    return publication_template(
        publication,
        subject=issue.subject,
        html=issue.html,
        text=issue.text,
        list_name=list_name,
        list_slug=list_slug,
        list_id_domain=block.list_id_domain,
        # campaign:list:publication:sender, as mailbox providers' feedback loops expect
        feedback_id=f"{send_id}:{list_slug.split('.')[0]}:{publication.slug}:{block.feedback_id_sender or 'newsletter'}",
        subject_prefix=subject_prefix,
    )


class SendTemplate:
    """A compiled issue ready to be personalised for the recipients of one send,
    through its publication's lane: its links, return path, List-Id, keys."""

    def __init__(self, lane: Lane, send: Send, issue: IssueRow, publication: PublicationRow, template,
                 now: clock.Carried):
        self.lane = lane
        self.now = now  # the database's clock: which DKIM key signs a message is decided by it
        self.settings = lane.settings
        self.send_id = send.id
        self.web_url = f"{publication.web_base_url.rstrip('/')}/{issue.slug}/"
        self.domain = template.domain
        # Counted links (docs/clicks.md): rewritten here, once per send; per message only a nonce.
        mode = sending_block(publication).clicks
        self.click_refs = clicks.ClickRefs(mode, self.settings.signing_keys) if mode else None
        if mode:
            html, text, _ = clicks.rewrite(template.html, template.text, keys=self.settings.signing_keys,
                                           base_url=self.settings.base_url, send_id=send.id)
            template = replace(template, html=html, text=text)
        self.template = template

    @classmethod
    def load(cls, session: Session, settings: Settings, send: Send, *, subject_prefix: str = "",
             lanes: Lanes | None = None) -> "SendTemplate":
        issue = session.get(IssueRow, send.issue_id)
        publication = session.get(PublicationRow, issue.publication_id)
        template = message_template(issue, publication, header_list_of(session, send), send.id, subject_prefix)
        lane = (lanes or Lanes(settings)).lane(publication)
        check_links_allowed(publication, lane.settings, send.allow_private_links)
        now = clock.Carried(session)
        lane.signer(now.now())  # a key that cannot be used stops the send before anything is claimed
        return cls(lane, send, issue, publication, template, now)

    def envelope(self, send: Send, row) -> Envelope:
        """The envelope for ``row``, a ledger row a batch run claimed (``claims.Claimed``)."""
        if not row.email.isascii() and (never := why_never_delivered(self.lane.transport, row.email)):
            raise UnsendableAddress(Problem("field email", never, "send through a transport that has SMTPUTF8"))
        recipient = Recipient(
            email=row.email,
            name=row.name,
            message_id=make_message_id(self.domain, send.id, row.delivery_id, self.settings.install_tag),
            unsubscribe_url=unsubscribe_url(self.settings, send.id, row.subscriber_id or 0),
            preferences_url=preferences_url(self.settings, row.subscriber_id or 0),
            web_url=self.web_url,
            click_ref=self.click_refs.make(row.subscriber_id) if self.click_refs else "",
        )
        signer = self.lane.signer(self.now.now())
        # Signed from its parts: what every recipient shares is canonicalised once.
        sign = None if signer is None else partial(signer.sign_parts, domain=self.domain)
        envelope = self.template.envelope(row.delivery_id, recipient, sign=sign)
        if self.settings.bounce_domain:  # VERP: a bounce names its ledger row
            envelope = replace(envelope, sender=verp_address(self.settings, row.delivery_id))
        return envelope
