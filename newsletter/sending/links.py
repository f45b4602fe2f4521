"""Links in messages must be https and public.

RFC 8058 one-click unsubscribe and the big mailbox providers want an https
link, and a subscriber cannot follow one to loopback or a private address.
``newsletter check`` and ``schedule`` warn about such links; a real send
(any transport but the outbox) is refused with them, when it is scheduled and
again when it starts, unless the operator said so when scheduling
(``--allow-private-links``, or the console's box; kept on the send).
"""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.errors import InputError, Problem
from newsletter.authoring.sending_block import link_problem

ALLOW_FLAG = "--allow-private-links"


def link_problems(publication, settings: Settings, severity: str = "warning") -> list[Problem]:
    """What is wrong with the addresses a publication's messages link to.

    ``settings`` are the publication's (``store.publications.settings_for``),
    so ``base_url`` is its own; ``publication`` is a stored row or an
    ``issue.Publication``.
    """
    found = []
    for field, url, fix in (
        ("sending.base_url", settings.base_url,
         "set `sending.base_url:` in publication.yaml (or BASE_URL) to the web app's public https address"),
        ("web_base_url", publication.web_base_url, "set `web_base_url:` to the public https address of its web copies"),
    ):
        problem = link_problem(url)
        if problem:
            found.append(Problem(f"publication '{publication.slug}', {field}",
                                 f"links in its messages would not work for subscribers: {problem}", fix, severity))
    return found


def is_real_send(settings: Settings) -> bool:
    """Mail that reaches people: every transport but the outbox folder."""
    return settings.transport != "outbox"


def refused_links(publication, settings: Settings) -> list[Problem]:
    """The links a real send would refuse (none when mail goes to the outbox folder).
    ``settings`` are the publication's own, as for ``link_problems``."""
    return link_problems(publication, settings, severity="error") if is_real_send(settings) else []


def check_links_allowed(publication, settings: Settings, allowed: bool,
                        how_to_allow: str = f"schedule with {ALLOW_FLAG}") -> None:
    """Refuse a real send whose links are not https and public, unless allowed.

    The one link check: scheduling (``scheduling.schedule_issue``) and the start
    of each batch run ask it; ``how_to_allow`` says how the operator says so
    where they are (a flag, a box to tick)."""
    problems = [] if allowed else refused_links(publication, settings)
    if problems:
        raise InputError([Problem(p.where, p.message + f"; a send through {settings.transport} refuses them",
                                  p.fix + f", or {how_to_allow} if that is meant") for p in problems])


def sending_warnings(publication, settings: Settings) -> list[Problem]:
    """What ``check`` and ``schedule`` say about how a publication's mail would
    leave from here: links that are not https and public, secrets not set.

    ``publication`` is an ``issue.Publication`` as read from its file; each
    warning is placed at the line of the field (the file's first line for a
    value that comes from the environment). With the outbox, where no mail
    reaches anyone, only a link the file itself sets is warned about.
    """
    from newsletter.authoring.sending_block import SendingBlock, lane_settings

    block = publication.sending or SendingBlock()
    own = lane_settings(settings, block, publication.slug, secrets=False)
    found = []
    for problem in link_problems(publication, own):
        field = "web_base_url" if problem.where.endswith("web_base_url") else "sending"
        if field == "web_base_url" or block.base_url or is_real_send(own):  # written in the file, or mail goes out
            found.append(Problem(_place(publication, field), f"{problem.where}: {problem.message}", problem.fix,
                                 "warning"))
    for ref in block.secret_refs():
        if not ref.is_set():
            how = f"the environment variable {ref.env}" if ref.env else f"the secrets file {ref.file}"
            found.append(Problem(_place(publication, "sending"),
                                 f"publication '{publication.slug}', {ref.field}_{'env' if ref.env else 'file'}: "
                                 f"{how} is not set here", "set it in the environment of every worker and web process "
                                 "(sends of this publication pause until it is)", "warning"))
    return found


def _place(publication, field: str) -> str:
    """FILE:LINE of a publication's field, when it was read from a file."""
    where = publication.where(field) if hasattr(publication, "where") else None
    return str(where) if where is not None else f"publication '{publication.slug}'"
