"""Segments: saved, named conditions on subscribers, and who a send goes to.

A condition is a short sentence, read with a lark grammar and compiled to a
SQLAlchemy expression (never to SQL text), so it runs alike on SQLite and
PostgreSQL:

    organisation is "Stoke-on-Trent City Council"
    joined after 2024-01-01 and not in list board
    (role contains "editor" or role is empty) and in list staff

Fields: ``email``, ``name``, ``source`` (text), ``joined`` (a date), and any
custom field from the subscribers' data (text; a name with spaces in square
brackets: ``[job title] is "Clerk"``). Text operators ignore the case of the
letters A-Z. Dates are days in the publication's time zone.

An audience is the active, unsuppressed subscribers confirmed on at least one
of a send's lists (for a segment alone: any list of its publication) who
match the condition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select
from sqlalchemy.orm import Session

from newsletter.errors import InputError, NotFound, Problem
from newsletter.store.publications import get_publication
from newsletter.store.models import MailingList, Membership, PublicationRow, Segment, Subscriber
from newsletter.audience.suppressions import suppressed_key_in_sql

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
SAMPLE_SIZE = 10

GRAMMAR = r"""
?start: or_
?or_: and_ (_OR and_)*
?and_: not_ (_AND not_)*
?not_: _NOT not_ -> negation
     | atom
?atom: "(" or_ ")"
     | _IN _LIST SLUG -> in_list
     | field EMPTY_TEST -> empty_test
     | field OPERATOR value -> comparison
field: FIELD | BRACKETED
value: STRING | DATE | WORD

_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_LIST.2: /list\b/i
EMPTY_TEST.4: /is\s+(not\s+)?empty\b/i
OPERATOR.3: /is\s+not\b/i | /is\b/i | /contains\b/i | /starts\s+with\b/i | /ends\s+with\b/i
          | /before\b/i | /after\b/i | /on\b/i
SLUG: /[a-z0-9][a-z0-9-]*/
FIELD: /[A-Za-z_][A-Za-z0-9_-]*/
BRACKETED: /\[[^\]\n]+\]/
STRING: /"(?:[^"\\\n]|\\.)*"/
DATE.1: /\d{4}-\d{2}-\d{2}/
WORD: /[^\s()"]+/

%import common.WS
%ignore WS
"""

TEXT_OPERATORS = ("is", "is not", "contains", "starts with", "ends with", "is empty", "is not empty")
DATE_OPERATORS = ("before", "after", "on")
BUILT_IN = {"email": "text", "name": "text", "source": "text", "joined": "date"}
# What lark's terminal names mean to a person reading an error.
EXPECTED_WORDS = {
    "FIELD": "a field name", "BRACKETED": "a [field name]", "_IN": "in list", "LPAR": "(", "RPAR": ")",
    "_NOT": "not", "_AND": "and", "_OR": "or", "OPERATOR": "an operator (is, contains, after ...)",
    "EMPTY_TEST": "is empty", "STRING": 'a "quoted text"', "DATE": "a date (YYYY-MM-DD)", "WORD": "a value",
    "SLUG": "a list's slug", "_LIST": "list",
}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


# --- the condition, as read ---------------------------------------------------------


@dataclass(frozen=True)
class Test:
    field: str
    operator: str  # one of TEXT_OPERATORS or DATE_OPERATORS
    value: Token | None  # None for is empty / is not empty
    column: int


@dataclass(frozen=True)
class InList:
    slug: str
    column: int


@dataclass(frozen=True)
class Not:
    inner: object


@dataclass(frozen=True)
class Both:
    parts: tuple


@dataclass(frozen=True)
class Either:
    parts: tuple


class _Tree(Transformer):
    def or_(self, parts):
        return Either(tuple(parts))

    def and_(self, parts):
        return Both(tuple(parts))

    def negation(self, parts):
        return Not(parts[0])

    def in_list(self, parts):
        return InList(str(parts[0]), parts[0].column)

    def field(self, parts):
        token = parts[0]
        name = token[1:-1].strip() if token.type == "BRACKETED" else str(token)
        return Token("FIELD", name.lower(), line=token.line, column=token.column)

    def value(self, parts):
        return parts[0]

    def empty_test(self, parts):
        field, test = parts
        operator = "is not empty" if "not" in test.lower() else "is empty"
        return Test(str(field), operator, None, field.column)

    def comparison(self, parts):
        field, operator, value = parts
        return Test(str(field), " ".join(operator.lower().split()), value, field.column)


def parse(condition: str):
    """The condition as a tree, or InputError saying where it cannot be read."""
    if not condition.strip():
        raise InputError(Problem("condition", "the condition is empty", 'write one, e.g. joined after 2024-01-01'))
    try:
        return _Tree().transform(_parser().parse(condition))
    except UnexpectedInput as exc:
        raise InputError(_left_out_already(condition) or _syntax_problem(condition, exc)) from None


# People an audience never holds, whatever the condition: a condition about
# them ("not bounced") is a mistake worth naming as such, not as bad grammar.
_ALWAYS_LEFT_OUT = re.compile(r"\b(bounc\w*|suppress\w*|complain\w*)", re.IGNORECASE)


def _left_out_already(condition: str, column: int | None = None) -> Problem | None:
    found = _ALWAYS_LEFT_OUT.search(condition)
    if found is None:
        return None
    return Problem(f"condition, column {column or found.start() + 1}",
                   f"{found.group()!r}: bounced people are always left out of every audience, and so are "
                   "suppressed and unsubscribed people: a segment needs no condition about them",
                   "remove that part of the condition")


def _syntax_problem(condition: str, exc: UnexpectedInput) -> Problem:
    column = getattr(exc, "column", len(condition) + 1)
    if isinstance(exc, UnexpectedEOF):
        what, column = "the condition stops too soon", len(condition) + 1
    elif isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        what, column = "the condition stops too soon", len(condition.rstrip()) + 1
    elif isinstance(exc, UnexpectedToken):
        what = f"{exc.token!s} was not expected here"
    elif isinstance(exc, UnexpectedCharacters):
        what = f"cannot read {condition[exc.pos_in_stream:exc.pos_in_stream + 12]!r}"
    else:
        what = "cannot read the condition"
    expected = sorted({EXPECTED_WORDS.get(name, name.lower()) for name in getattr(exc, "expected", ()) or ()})
    fix = ("expected " + ", ".join(expected)) if expected else 'see `newsletter segments --help` for the words a condition uses'
    if 'a "quoted text"' in expected or "a value" in expected:
        fix += '; put text in double quotes, e.g. organisation is "City Council"'
    return Problem(f"condition, column {column}", what, fix)


# --- compiling to SQLAlchemy ----------------------------------------------------------


@dataclass
class Compiler:
    """Turns a parsed condition into a SQLAlchemy expression on ``Subscriber``.

    ``strict`` (when a segment is saved or counted) refuses unknown fields and
    lists; when a send's audience is frozen, a list removed since matches nobody.
    """

    session: Session
    publication: PublicationRow
    strict: bool = True
    within: ColumnElement[bool] | None = None  # a page of Membership.subscriber_id (freezing)

    def compile(self, node) -> ColumnElement[bool]:
        if isinstance(node, Either):
            return or_(*(self.compile(part) for part in node.parts))
        if isinstance(node, Both):
            return and_(*(self.compile(part) for part in node.parts))
        if isinstance(node, Not):
            return not_(self.compile(node.inner))
        if isinstance(node, InList):
            return self._in_list(node)
        return self._test(node)

    def _in_list(self, node: InList) -> ColumnElement[bool]:
        list_id = self.session.scalar(
            select(MailingList.id).where(MailingList.publication_id == self.publication.id, MailingList.slug == node.slug)
        )
        if list_id is None:
            if not self.strict:
                return false()
            slugs = self.session.scalars(
                select(MailingList.slug).where(MailingList.publication_id == self.publication.id).order_by(MailingList.slug)
            ).all()
            raise InputError(Problem(f"condition, column {node.column}", f"{self.publication.slug} has no list {node.slug!r}",
                                     "its lists are: " + (", ".join(slugs) or "none yet")))
        return _member_of(Membership.list_id == list_id, self.within)

    def _test(self, test: Test) -> ColumnElement[bool]:
        kind = BUILT_IN.get(test.field) or self._custom_field(test)
        allowed = DATE_OPERATORS if kind == "date" else TEXT_OPERATORS
        if test.operator not in allowed:
            raise InputError(Problem(
                f"condition, column {test.column}",
                f"{test.operator!r} makes no sense for {test.field} ({'a date' if kind == 'date' else 'text'})",
                "use " + ", ".join(allowed),
            ))
        if kind == "date":
            return self._date_test(test)
        return self._text_test(test)

    def _custom_field(self, test: Test) -> str:
        if self.strict and self.session.scalar(select(Subscriber.id).where(_custom(test.field).is_not(None)).limit(1)) is None:
            if left_out := _left_out_already(test.field, test.column):
                raise InputError(left_out)
            known = ", ".join(sorted(BUILT_IN))
            custom = ", ".join(custom_field_sample(self.session)) or "none yet"
            raise InputError(Problem(
                f"condition, column {test.column}", f"unknown field {test.field!r}: no subscriber has it",
                f"the fields are {known}, and custom fields from imports such as: {custom}",
            ))
        return "text"

    def _text_test(self, test: Test) -> ColumnElement[bool]:
        # A missing custom field reads as empty text, never as SQL's NULL, so
        # "not (x contains ...)" includes the people without x.
        column = func.coalesce(_text_column(test.field), "")
        if test.operator in ("is empty", "is not empty"):
            return (column == "") if test.operator == "is empty" else (column != "")
        if test.value.type != "STRING":
            raise InputError(Problem(f"condition, column {test.value.column}",
                                     f"{test.field} is text, and {test.value!s} is not quoted",
                                     f'put the text in double quotes: {test.field} {test.operator} "{test.value!s}"'))
        text = _unquote(test.value).lower()
        lowered = func.lower(column)
        if test.operator == "is":
            return lowered == text
        if test.operator == "is not":
            return lowered != text
        if test.operator == "contains":
            return lowered.contains(text, autoescape=True)
        if test.operator == "starts with":
            return lowered.startswith(text, autoescape=True)
        return lowered.endswith(text, autoescape=True)

    def _date_test(self, test: Test) -> ColumnElement[bool]:
        day = _date(test)
        tz = ZoneInfo(self.publication.timezone)  # checked when the publication was saved
        start = datetime.combine(day, time(), tzinfo=tz)
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
        if test.operator == "before":
            return Subscriber.created_at < start
        if test.operator == "after":
            return Subscriber.created_at >= end
        return and_(Subscriber.created_at >= start, Subscriber.created_at < end)


def _text_column(field: str):
    if field == "email":
        return Subscriber.email_key  # lower-case already: the same person in any spelling
    if field in BUILT_IN:
        return getattr(Subscriber, field)
    return _custom(field)


def _custom(field: str):
    return Subscriber.attributes[field].as_string()


def _unquote(token: Token) -> str:
    return re.sub(r"\\(.)", r"\1", str(token)[1:-1])


def _date(test: Test) -> date:
    if test.value.type == "DATE":
        try:
            return date.fromisoformat(str(test.value))
        except ValueError:
            pass
    raise InputError(Problem(f"condition, column {test.value.column}",
                             f"{test.field} is a date, and {test.value!s} is not one",
                             f"write the day as YYYY-MM-DD, unquoted: {test.field} {test.operator} 2024-01-31"))


def custom_field_sample(session: Session, rows: int = 500) -> list[str]:
    """Custom field names in use, from the newest subscribers (for messages)."""
    found = set()
    for attributes in session.scalars(select(Subscriber.attributes).order_by(Subscriber.id.desc()).limit(rows)):
        found.update(attributes or {})
    return sorted(found)[:20]


def compile_condition(session: Session, publication: PublicationRow, condition: str, *, strict: bool = True, within=None):
    return Compiler(session, publication, strict, within).compile(parse(condition))


def _member_of(which_lists: ColumnElement[bool], within: ColumnElement[bool] | None) -> ColumnElement[bool]:
    """A confirmed membership of the subscriber in the lists. ``within`` repeats
    a page's id range on memberships: PostgreSQL does not carry it over from
    subscribers, and would otherwise hash every membership for every page."""
    parts = [Membership.subscriber_id == Subscriber.id, which_lists, Membership.status == "confirmed"]
    return exists().where(*parts, *([within] if within is not None else []))


# --- audiences --------------------------------------------------------------------


def audience_filter(
    session: Session, publication: PublicationRow, list_ids: list[int], condition: str = "", *,
    strict: bool = True, first_id: int | None = None, last_id: int | None = None,
) -> ColumnElement[bool]:
    """Who a send to ``list_ids`` (narrowed by ``condition``) goes to, as a WHERE
    on Subscriber; with ``first_id``/``last_id``, only that page of subscriber ids."""
    page, within = [], None
    if first_id is not None:
        page = [Subscriber.id >= first_id, *([Subscriber.id <= last_id] if last_id is not None else [])]
        within = and_(Membership.subscriber_id >= first_id,
                      *([Membership.subscriber_id <= last_id] if last_id is not None else []))
    parts = [*page, Subscriber.status == "active", ~suppressed_key_in_sql(Subscriber.email_key)]
    tree = parse(condition) if condition else None
    # "in list board" (and ...) already asks for a confirmed membership of one of
    # the send's lists: asking again would make the database look through every
    # membership of every list for nothing.
    if tree is None or not set(_required_list_ids(session, publication, tree)) & set(list_ids):
        parts.append(_member_of(Membership.list_id.in_(list_ids), within))
    if tree is not None:
        parts.append(Compiler(session, publication, strict, within).compile(tree))
    return and_(*parts)


def _required_list_ids(session: Session, publication: PublicationRow, tree) -> list[int]:
    """The lists a condition requires a confirmed membership of, whatever else it says."""
    slugs = [tree.slug] if isinstance(tree, InList) else [
        part.slug for part in tree.parts if isinstance(part, InList)] if isinstance(tree, Both) else []
    if not slugs:
        return []
    return session.scalars(
        select(MailingList.id).where(MailingList.publication_id == publication.id, MailingList.slug.in_(slugs))
    ).all()


def publication_list_ids(session: Session, publication: PublicationRow) -> list[int]:
    return session.scalars(
        select(MailingList.id).where(MailingList.publication_id == publication.id).order_by(MailingList.id)
    ).all()


@dataclass(frozen=True)
class Preview:
    count: int
    sample: list[Subscriber]


def preview(session: Session, publication: PublicationRow, list_ids: list[int], condition: str = "") -> Preview:
    """How many an audience holds today, and the first few of them."""
    where = audience_filter(session, publication, list_ids, condition)
    count = session.scalar(select(func.count()).select_from(Subscriber).where(where))
    sample = session.scalars(select(Subscriber).where(where).order_by(Subscriber.id).limit(SAMPLE_SIZE)).all()
    return Preview(count, list(sample))


# --- saved segments -------------------------------------------------------------------


def create_segment(session: Session, publication_slug: str, name: str, condition: str, description: str = "") -> Segment:
    """Save a condition under a name, once it has been read and checked."""
    publication = get_publication(session, publication_slug)
    if not NAME.match(name):
        raise InputError(Problem("segment name", f"{name!r} cannot name a segment",
                                 "use lower-case letters, digits and hyphens, e.g. council-staff"))
    if session.scalar(select(Segment.id).where(Segment.publication_id == publication.id, Segment.name == name)):
        raise InputError(Problem("segment name", f"{publication_slug} already has a segment {name!r}", "choose another name"))
    compile_condition(session, publication, condition)
    row = Segment(publication_id=publication.id, name=name, condition=" ".join(condition.split()),
                  description=description.strip())
    session.add(row)
    session.flush()
    return row


def get_segment(session: Session, publication_slug: str | None, name: str) -> Segment:
    query = select(Segment).join(PublicationRow).where(Segment.name == name)
    if publication_slug is not None:
        query = query.where(PublicationRow.slug == get_publication(session, publication_slug).slug)
    found = session.scalars(query).all()
    if not found:
        raise NotFound(f"no segment {name!r}; `newsletter segments list` shows the segments there are")
    if len(found) > 1:
        raise InputError(Problem("segment", f"several publications have a segment {name!r}", "say which with --publication"))
    return found[0]


def list_segments(session: Session, publication_slug: str | None = None) -> list[tuple[str, Segment]]:
    query = select(PublicationRow.slug, Segment).join(PublicationRow).order_by(PublicationRow.slug, Segment.name)
    if publication_slug is not None:
        query = query.where(PublicationRow.slug == get_publication(session, publication_slug).slug)
    return [(slug, segment) for slug, segment in session.execute(query)]


def segment_preview(session: Session, segment: Segment) -> Preview:
    publication = session.get(PublicationRow, segment.publication_id)
    return preview(session, publication, publication_list_ids(session, publication), segment.condition)
