"""Counting clicks: each one classed human, machine or unsure, kept as counts only.

Takes in the clicks the web app's redirect saw (``Click``: the token's send
and link, the ``m=`` nonce, and what the request looked like) and hands on
counts per send, link, hour and class (``click_counts``), per message nonce
(``click_messages``), and web copy page views per page and day
(``page_views``). With ``sending.clicks: per_person`` only, each click also
becomes a ``click_history`` row naming the subscriber.

The rules, in order (docs/clicks.md says why; each has a test):

1. ``request``: a HEAD (or any method but GET) or a prefetch is a machine.
2. ``agent``: a user agent of a known link scanner or HTTP library, or none.
3. ``trap``: the link no person can see. Its client is a machine, and so are
   that client's other fetches of the same message in the burst window,
   before and after.
4. ``burst``: one client address fetching ``BURST_LINKS`` or more different
   links of the same message within ``BURST_SECONDS``: a machine, the earlier
   fetches too.
5. ``early``: a click within ``EARLY_SECONDS`` of the message being made is
   unsure (a gateway fetches then; people rarely do).
6. Anything else is human.

The redirect never waits for this: ``ClickCounter.record`` (click_counter.py) appends to a
queue in memory; a thread classes the queue and writes the counts to the
database in one transaction four times a second. If the database is away, counts wait
in memory (merged, so memory stays small) and go with the next write that
works; a SIGKILL loses at most the last second. Client addresses are held
only as a keyed digest, in memory and (with Redis, shared by the web
processes: ``click_counter.SharedMemory``) in keys that expire, for ``BURST_SECONDS``;
never in the database or a log.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.authoring.counted_links import TRAP
from newsletter.store.models import ClickCount, ClickHistory, ClickMessage, PageView, PublicationRow, Send
from newsletter.store.upsert import dialect_insert

log = logging.getLogger(__name__)

HUMAN, MACHINE, UNSURE = "human", "machine", "unsure"
CLASSES = (HUMAN, MACHINE, UNSURE)

BURST_LINKS = 3  # different links of one message ...
BURST_SECONDS = 10.0  # ... from one address within this many seconds: a machine
EARLY_SECONDS = 30  # a click this soon after the message was made is unsure

# Link scanners, previewers and HTTP libraries. People's browsers never say these.
SCANNER_AGENTS = re.compile(
    r"bot\b|bot/|crawler|spider|scan|preview|proofpoint|mimecast|barracuda|fireeye|forcepoint|"
    r"safelinks|defender|symantec|trendmicro|sophos|zscaler|cisco|ironport|appriver|"
    r"python-requests|python-urllib|python-httpx|aiohttp|\bcurl/|wget|go-http-client|okhttp|java/|"
    r"apache-httpclient|libwww|httpclient|node-fetch|axios|guzzle|ruby|postmanruntime|"
    r"phantomjs|slurp|facebookexternalhit|whatsapp|slackbot|discordbot|skypeuripreview|"
    r"microsoft office|ms-office|googleimageproxy|yahoomailproxy",
    re.IGNORECASE,
)
_PREFETCH_HEADERS = ("Purpose", "Sec-Purpose", "X-Purpose", "X-Moz")


@dataclass(frozen=True)
class Click:
    """One request of a counted link, as the redirect saw it (never stored as such)."""

    send_id: int
    link: int
    at: float  # when it came, seconds since the epoch
    client: bytes  # a keyed digest of the client's address; memory only
    nonce: str = ""  # the message's, from m=; "" when missing
    made_at: int | None = None  # when the message was made, from m=
    subscriber_id: int | None = None  # per_person only
    machine_reason: str = ""  # rules 1 and 2, decided from the request alone


def request_rule(method: str, headers) -> str:
    """Rules 1 and 2: why the request alone shows a machine, or ""."""
    if method != "GET":
        return "request"
    for name in _PREFETCH_HEADERS:
        value = headers.get(name)
        if value and ("prefetch" in value.lower() or "preview" in value.lower() or "prerender" in value.lower()):
            return "request"
    return "agent" if scanner_agent(headers.get("User-Agent") or "") else ""


@functools.lru_cache(maxsize=4096)
def scanner_agent(agent: str) -> bool:
    """Rule 2 for one user agent; a few hundred agents make up nearly every click, so remembered."""
    return not agent.strip() or bool(SCANNER_AGENTS.search(agent))


def client_digest(secret: bytes, address: str) -> bytes:
    """Who fetched, as far as the burst rule needs: a keyed digest, kept in memory only."""
    return hmac.new(secret, address.encode("utf-8", "replace"), hashlib.blake2b).digest()[:16]


# --- rules 3 to 6: what one client did with one message -------------------------------


@dataclass
class _Counted:
    link: int
    hour: datetime
    kind: str
    at: float
    subscriber_id: int | None


@dataclass
class _Recent:
    fetches: list[tuple[float, int]] = field(default_factory=list)  # (at, link)
    counted: list[_Counted] = field(default_factory=list)
    machine: bool = False
    last: float = 0.0


class Deltas:
    """Changes to the counts, merged by key: what one write to the database does."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int, datetime], list[int]] = {}
        self.messages: dict[tuple[int, str], list[int]] = {}
        self.views: dict[tuple[int, str, date], int] = {}
        self.history: list[tuple[int, int, int, datetime, str]] = []  # subscriber, send, link, at, kind
        self.history_fixes: list[tuple[int, int, int, datetime]] = []  # rows to class as machine

    def add(self, send_id: int, link: int, hour: datetime, nonce: str, kind: str, amount: int = 1) -> None:
        column = CLASSES.index(kind)
        self.counts.setdefault((send_id, link, hour), [0, 0, 0])[column] += amount
        if nonce:
            self.messages.setdefault((send_id, nonce), [0, 0, 0])[column] += amount

    def merge(self, other: "Deltas") -> None:
        for key, values in other.counts.items():
            mine = self.counts.setdefault(key, [0, 0, 0])
            for i, v in enumerate(values):
                mine[i] += v
        for key, values in other.messages.items():
            mine = self.messages.setdefault(key, [0, 0, 0])
            for i, v in enumerate(values):
                mine[i] += v
        for key, views in other.views.items():
            self.views[key] = self.views.get(key, 0) + views
        self.history += other.history
        self.history_fixes += other.history_fixes

    def __len__(self) -> int:
        return len(self.counts) + len(self.messages) + len(self.views) + len(self.history)


class Classifier:
    """Rules 3 to 6, with what each client did with each message in the last seconds.

    Holds client digests in memory for ``BURST_SECONDS`` after their last fetch, no longer.
    """

    def __init__(self) -> None:
        self._recent: dict[tuple[bytes, int, str], _Recent] = {}
        self._swept = 0.0

    def classify(self, click: Click, deltas: Deltas) -> str:
        """The click's class, added to ``deltas``, with earlier clicks moved to machine if need be."""
        self._sweep(click.at)
        key = (click.client, click.send_id, click.nonce)
        recent = self._recent.setdefault(key, _Recent())
        recent.last = click.at
        recent.fetches = [(at, link) for at, link in recent.fetches if click.at - at <= BURST_SECONDS]
        recent.fetches.append((click.at, click.link))
        became_machine = False
        if click.link == TRAP or len({link for _, link in recent.fetches}) >= BURST_LINKS:
            became_machine = not recent.machine
            recent.machine = True
        if click.machine_reason or recent.machine:
            kind = MACHINE
        elif click.made_at is not None and click.at - click.made_at < EARLY_SECONDS:
            kind = UNSURE
        else:
            kind = HUMAN
        if became_machine:
            for earlier in recent.counted:
                if earlier.kind != MACHINE and click.at - earlier.at <= BURST_SECONDS:
                    deltas.add(click.send_id, earlier.link, earlier.hour, click.nonce, earlier.kind, -1)
                    deltas.add(click.send_id, earlier.link, earlier.hour, click.nonce, MACHINE)
                    if earlier.subscriber_id:
                        deltas.history_fixes.append((earlier.subscriber_id, click.send_id, earlier.link,
                                                     _moment(earlier.at)))
                    earlier.kind = MACHINE
        hour = _hour(click.at)
        deltas.add(click.send_id, click.link, hour, click.nonce, kind)
        if click.subscriber_id:
            deltas.history.append((click.subscriber_id, click.send_id, click.link, _moment(click.at), kind))
        recent.counted.append(_Counted(click.link, hour, kind, click.at, click.subscriber_id))
        return kind

    # --- shared through Redis (SharedMemory) ---------------------------------------------

    def keys_of(self, clicks: list[Click]) -> list[tuple[bytes, int, str]]:
        return list(dict.fromkeys((c.client, c.send_id, c.nonce) for c in clicks))

    def export(self, key: tuple[bytes, int, str]) -> str | None:
        recent = self._recent.get(key)
        if recent is None:
            return None
        return json.dumps({
            "f": recent.fetches, "m": recent.machine, "l": recent.last,
            "c": [[c.link, c.hour.timestamp(), c.kind, c.at, c.subscriber_id] for c in recent.counted],
        }, separators=(",", ":"))

    def load(self, key: tuple[bytes, int, str], data: str | bytes) -> None:
        value = json.loads(data)
        self._recent[key] = _Recent(
            fetches=[(at, link) for at, link in value["f"]], machine=value["m"], last=value["l"],
            counted=[_Counted(link, datetime.fromtimestamp(hour, timezone.utc), kind, at, sub)
                     for link, hour, kind, at, sub in value["c"]])

    def _sweep(self, now: float) -> None:
        if now - self._swept < BURST_SECONDS:
            return
        self._swept = now
        for key in [k for k, r in self._recent.items() if now - r.last > BURST_SECONDS]:
            del self._recent[key]

    def __len__(self) -> int:
        return len(self._recent)


def _hour(at: float) -> datetime:
    return datetime.fromtimestamp(at - at % 3600, timezone.utc)


def _moment(at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone.utc)


# --- writing the counts -------------------------------------------------------------------


def write_deltas(session: Session, deltas: Deltas) -> None:
    """Add the counts in one transaction; clicks of sends that no longer exist are dropped."""
    send_ids = {k[0] for k in deltas.counts} | {k[0] for k in deltas.messages} | {h[1] for h in deltas.history}
    known = set(session.scalars(select(Send.id).where(Send.id.in_(send_ids)))) if send_ids else set()
    counts = [{"send_id": s, "link": link, "hour": hour, "human": v[0], "machine": v[1], "unsure": v[2]}
              for (s, link, hour), v in deltas.counts.items() if s in known and any(v)]
    if counts:
        _add_up(session, ClickCount, counts, ["send_id", "link", "hour"], ("human", "machine", "unsure"))
    messages = [{"send_id": s, "nonce": nonce, "human": v[0], "machine": v[1], "unsure": v[2]}
                for (s, nonce), v in deltas.messages.items() if s in known and any(v)]
    if messages:
        _add_up(session, ClickMessage, messages, ["send_id", "nonce"], ("human", "machine", "unsure"))
    publications = {k[0] for k in deltas.views}
    if publications:
        alive = set(session.scalars(select(PublicationRow.id).where(PublicationRow.id.in_(publications))))
        views = [{"publication_id": p, "path": path, "day": day, "views": n}
                 for (p, path, day), n in deltas.views.items() if p in alive]
        if views:
            _add_up(session, PageView, views, ["publication_id", "path", "day"], ("views",))
    history = [{"subscriber_id": sub, "send_id": s, "link": link, "clicked_at": at, "kind": kind}
               for sub, s, link, at, kind in deltas.history if s in known]
    if history:
        from newsletter.store.models import Subscriber  # only per_person publications get here

        people = set(session.scalars(select(Subscriber.id).where(
            Subscriber.id.in_({h["subscriber_id"] for h in history}), Subscriber.status != "erased")))
        history = [h for h in history if h["subscriber_id"] in people]
        if history:
            session.execute(ClickHistory.__table__.insert(), history)
    for sub, s, link, at in deltas.history_fixes:
        session.execute(update(ClickHistory).where(
            ClickHistory.subscriber_id == sub, ClickHistory.send_id == s, ClickHistory.link == link,
            ClickHistory.clicked_at == at).values(kind=MACHINE))


def _add_up(session: Session, model, rows: list[dict], keys: list[str], columns: tuple[str, ...]) -> None:
    insert = dialect_insert(session, model)
    table = model.__table__
    statement = insert.on_conflict_do_update(
        index_elements=keys, set_={c: table.c[c] + insert.excluded[c] for c in columns})
    session.execute(statement, rows)
