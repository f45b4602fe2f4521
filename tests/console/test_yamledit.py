"""Saving a form changes the lines of the fields that changed, and no others:
comments, key order, quoting, indentation and block text stay as written."""

from __future__ import annotations

import difflib

import pytest

from newsletter.console import sections, yamledit
from tests.conftest import SAMPLE_ISSUE


def posted(form: sections.SectionForm) -> dict:
    """What the browser posts back for a section form nobody changed."""
    fields = {"title": form.value("title"), "body": form.body}
    fields |= {name: form.value(name) for name in sections.FORM_FIELDS[form.kind]}
    for list_name, names in (("items", sections.ITEM_FIELDS), ("figures", sections.FIGURE_FIELDS)):
        rows = form.rows(list_name)
        fields[f"{list_name}-count"] = str(len(rows))
        for n, row in enumerate(rows):
            fields |= {f"{list_name}-{n}-{name}": sections.flat(row, name) for name in names}
    return fields


def changed_lines(before: bytes, after: bytes) -> list[str]:
    diff = difflib.unified_diff(before.decode().splitlines(), after.decode().splitlines(), n=0, lineterm="")
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


@pytest.mark.parametrize("path", sorted(SAMPLE_ISSUE.glob("*.md")), ids=lambda p: p.name)
def test_saving_a_section_nobody_changed_gives_the_file_back_byte_for_byte(path):
    data = path.read_bytes()
    form = sections.read_section(data, path.name)
    assert sections.write_section(sections.section_from_form(form, posted(form))) == data


@pytest.mark.parametrize("name, field, new", [
    ("02-priorities.md", "items-0-heading", "Frailty: a new heading"),  # quoted, in a list
    ("02-priorities.md", "items-1-summary", "One sentence now."),  # a `|` block
    ("04-programmes.md", "figures-0-value", "900,000"),  # quoted number-like text
    ("01-chair.md", "role", "Chair"),
    ("05-vaccination-chart.md", "width", "400"),
])
def test_saving_one_changed_field_changes_exactly_its_line(name, field, new):
    data = (SAMPLE_ISSUE / name).read_bytes()
    form = sections.read_section(data, name)
    fields = posted(form) | {field: new}
    after = sections.write_section(sections.section_from_form(form, fields))
    removed = [line for line in changed_lines(data, after) if line.startswith("-")]
    added = [line for line in changed_lines(data, after) if line.startswith("+")]
    if field == "items-1-summary":  # a two-line block becomes one line: its text lines go, one comes
        assert len(added) == 1 and "One sentence now." in added[0], added
        assert all("|" not in line for line in removed + added)
    else:
        assert len(removed) == len(added) == 1, changed_lines(data, after)
        assert new in added[0]
    again = sections.read_section(after, name)
    assert again.values.get("kind") == form.kind


def test_a_quoted_value_stays_quoted_and_the_manifest_keeps_its_comment():
    data = (SAMPLE_ISSUE / "issue.yaml").read_bytes()
    manifest = sections.read_manifest(data)
    fields = {name: str(manifest[name]) for name in sections.MANIFEST_FORM_FIELDS}
    assert sections.write_manifest(sections.manifest_from_form(manifest, fields)) == data
    after = sections.write_manifest(sections.manifest_from_form(manifest, fields | {"subject": "October's news"}))
    assert changed_lines(data, after) == [
        "-subject: \"Together We're Better: September 2021\"", "+subject: \"October's news\""]
    assert after.decode().startswith("# One issue")


def test_reordering_sections_changes_only_the_list_lines():
    data = (SAMPLE_ISSUE / "issue.yaml").read_bytes()
    manifest = sections.read_manifest(data)
    names = sections.section_names(manifest)
    manifest["sections"] = [names[1], names[0], *names[2:]]
    after = sections.write_manifest(manifest)
    changed = changed_lines(data, after)
    assert changed and all(line[1:] in (f"  - {names[0]}", f"  - {names[1]}") for line in changed), changed
    assert len(after.splitlines()) == len(data.splitlines())


@pytest.mark.parametrize("text", [
    "a: 1\nb:\n- x\n- y\n",  # lists not indented
    "a: 1\nb:\n    - x\n    - y\n",  # indented four
    "a: 1  # why\nb:\n    c: 1\n    d: [1, 2]\n",  # mappings indented four, a comment, a flow list
])
def test_a_file_keeps_its_own_indentation_and_comments(text):
    import yaml

    values = yaml.safe_load(text) | {"a": 2}
    after = yamledit.updated(text, values)
    assert changed_lines(text.encode(), after.encode())[1:] == [text.splitlines()[0].replace("1", "2", 1).join(["+", ""])]
    assert after.splitlines()[1:] == text.splitlines()[1:]


def test_a_new_field_goes_where_the_order_puts_it_and_several_lines_become_a_block():
    text = "kind: image\nsrc: a.png\n"
    out = yamledit.updated(text, {"kind": "image", "title": "Chart", "src": "a.png", "caption": "one\ntwo"},
                           ("kind", "title", "src", "caption"))
    assert out == "kind: image\ntitle: Chart\nsrc: a.png\ncaption: |-\n  one\n  two\n"


def test_text_that_is_not_a_mapping_is_refused_so_the_form_writes_it_anew():
    with pytest.raises(yamledit.Unreadable):
        yamledit.updated("- a\n- b\n", {"a": 1})
