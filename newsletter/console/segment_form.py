"""The console's segment form: rows of field, operator and value (or "in
list" / "not in list" a list), joined by and or or, written as the condition
text the CLI takes (``newsletter segments create NAME CONDITION``). The
library reads and checks that text; an error it finds is put back on the row
it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience import segments
from newsletter.errors import InputError, Problem
from newsletter.store.models import MailingList, PublicationRow

LIST = "list"  # the field a list rule names
LIST_OPERATORS = ("in list", "not in list")
OPERATORS = (*segments.TEXT_OPERATORS, *segments.DATE_OPERATORS, *LIST_OPERATORS)
NO_VALUE = ("is empty", "is not empty")
JOINERS = ("and", "or")
_PLAIN_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_WORDS = {"and", "or", "not", "in", "list", "is", "contains", "starts", "ends", "before", "after", "on", "empty"}
_AT_COLUMN = re.compile(r"column (\d+)")


@dataclass(frozen=True)
class Rule:
    field: str = ""
    operator: str = ""
    value: str = ""


@dataclass(frozen=True)
class RuleProblem:
    """An error on one row of the form (``row`` counts from 0; None: the whole condition)."""

    row: int | None
    message: str
    fix: str


def fields(session: Session, publication: PublicationRow) -> list[str]:
    """What the form offers: the built-in fields, the custom fields in use, and list membership."""
    return [*segments.BUILT_IN, *(f for f in segments.custom_field_sample(session) if f not in segments.BUILT_IN), LIST]


def list_slugs(session: Session, publication: PublicationRow) -> list[str]:
    return list(session.scalars(select(MailingList.slug).where(MailingList.publication_id == publication.id)
                                .order_by(MailingList.slug)))


def condition_text(rules: list[Rule], joiner: str = "and") -> tuple[str, list[int]]:
    """The condition and the column (from 1) where each rule's text starts; InputError for a row
    that cannot be written (``where`` is ``row N``, from 1)."""
    joiner = joiner if joiner in JOINERS else "and"
    parts, starts, column = [], [], 1
    for n, rule in enumerate(rules, start=1):
        text = _rule_text(rule, n)
        if parts:
            column += len(f" {joiner} ")
        starts.append(column)
        parts.append(text)
        column += len(text)
    if not parts:
        raise InputError(Problem("row 1", "the segment has no rule", "choose a field, an operator and a value"))
    return f" {joiner} ".join(parts), starts


def _rule_text(rule: Rule, n: int) -> str:
    where = f"row {n}"
    if rule.operator not in OPERATORS:
        raise InputError(Problem(where, "choose an operator", "is, contains, after, in list ..."))
    if rule.field == LIST or rule.operator in LIST_OPERATORS:
        if rule.field != LIST or rule.operator not in LIST_OPERATORS:
            raise InputError(Problem(where, "list membership takes the field list and in list or not in list",
                                     "choose list as the field, or another operator"))
        slug = rule.value.strip()
        if not slug:
            raise InputError(Problem(where, "no list is named", "type the list's slug, e.g. staff"))
        return ("not " if rule.operator == "not in list" else "") + f"in list {slug}"
    field = rule.field.strip()
    if not field:
        raise InputError(Problem(where, "choose a field", "email, name, source, joined or a custom field"))
    field = field if _PLAIN_FIELD.match(field) and field.lower() not in _WORDS else f"[{field}]"
    if rule.operator in NO_VALUE:
        return f"{field} {rule.operator}"
    value = rule.value.strip()
    if rule.operator in segments.DATE_OPERATORS:
        return f"{field} {rule.operator} {value or '?'}"
    return f'{field} {rule.operator} "{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'


def problem_row(problem: Problem, starts: list[int]) -> int | None:
    """The row (from 0) an error about ``condition, column N`` comes from."""
    found = _AT_COLUMN.search(problem.where)
    if not found or not starts:
        return None
    column = int(found.group(1))
    return max((n for n, start in enumerate(starts) if start <= column), default=0)


def check(session: Session, publication: PublicationRow, rules: list[Rule], joiner: str) -> tuple[str, segments.Preview]:
    """The condition text and its audience now (count and first ten); InputError with RuleProblems
    as ``rule_problems``."""
    try:
        condition, starts = condition_text(rules, joiner)
    except InputError as exc:
        raise _on_rows(exc, [int(p.where.split()[-1]) - 1 for p in exc.problems]) from None
    try:
        found = segments.preview(session, publication, segments.publication_list_ids(session, publication), condition)
    except InputError as exc:
        raise _on_rows(exc, [problem_row(p, starts) for p in exc.problems]) from None
    return condition, found


def save(session: Session, publication: PublicationRow, name: str, rules: list[Rule], joiner: str,
         description: str = ""):
    condition, _found = check(session, publication, rules, joiner)
    return segments.create_segment(session, publication.slug, name.strip(), condition, description)


def _on_rows(exc: InputError, rows: list[int | None]) -> InputError:
    exc.rule_problems = [RuleProblem(row, p.message, p.fix) for p, row in zip(exc.problems, rows)]
    return exc


def rules_from_form(fields_: list[str], operators: list[str], values: list[str]) -> list[Rule]:
    rows = [Rule(f.strip(), o.strip(), v) for f, o, v in zip(fields_, operators, values)]
    return [r for r in rows if r.field or r.value.strip()]
