"""The console's file handling without the web: which form field a finding's line
belongs to, section files read into forms and written back, and zips."""

from __future__ import annotations

import io
import zipfile

import pytest

from newsletter.console import bundles, sections
from newsletter.console.findings import field_at
from newsletter.errors import InputError
from tests.conftest import SAMPLE_ISSUE


@pytest.mark.parametrize("name, line, field", [
    ("02-priorities.md", 5, "items-0-heading"),
    ("02-priorities.md", 7, "items-0-summary"),
    ("02-priorities.md", 10, "items-0-url"),
    ("02-priorities.md", 12, "items-1-heading"),
    ("01-chair.md", 3, "title"),
    ("01-chair.md", 9, "body"),
    ("04-programmes.md", 6, "figures-0-label"),
    ("issue.yaml", 3, "subject"),
])
def test_a_line_of_a_file_belongs_to_the_form_field_that_holds_it(name, line, field):
    text = (SAMPLE_ISSUE / name).read_text().splitlines()
    assert field_at(SAMPLE_ISSUE / name, line) == field, text[line - 1]


def test_every_sample_section_survives_a_form_round_trip_unchanged_in_meaning():
    for path in sorted(SAMPLE_ISSUE.glob("*.md")):
        form = sections.read_section(path.read_bytes(), path.name)
        fields = {"title": form.value("title"), "body": form.body}
        fields |= {name: form.value(name) for name in sections.FORM_FIELDS[form.kind]}
        for list_name, names in (("items", sections.ITEM_FIELDS), ("figures", sections.FIGURE_FIELDS)):
            rows = form.rows(list_name)
            fields[f"{list_name}-count"] = str(len(rows))
            for n, row in enumerate(rows):
                fields |= {f"{list_name}-{n}-{name}": sections.flat(row, name) for name in names}
        again = sections.read_section(sections.write_section(sections.section_from_form(form, fields)), path.name)
        tidy = {k: (v.strip() if isinstance(v, str) else v) for k, v in form.values.items()}
        assert again.body == form.body.strip(), path.name
        assert {k: v for k, v in again.values.items() if k not in ("items", "figures")} == \
            {k: v for k, v in tidy.items() if k not in ("items", "figures")}, path.name
        assert [{k: str(v).strip() for k, v in i.items()} for i in again.items] == \
            [{k: str(v).strip() for k, v in i.items()} for i in form.items], path.name


def test_a_zip_of_a_folder_inside_folders_gives_the_issue_and_nothing_around_it():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("pub/publication.yaml", "name: x\n")
        archive.writestr("pub/issues/2021-09/issue.yaml", "title: x\n")
        archive.writestr("pub/issues/2021-09/01-a.md", "---\nkind: text\n---\nHi\n")
        archive.writestr("pub/issues/2021-09/.DS_Store", "junk")
        archive.writestr("__MACOSX/pub/issues/2021-09/._01-a.md", "junk")
    upload = bundles.read_issue_zip(out.getvalue())
    assert sorted(upload.files) == ["01-a.md", "issue.yaml"]


def test_a_section_file_that_is_not_utf8_is_refused_by_name():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("issue.yaml", "title: x\n")
        archive.writestr("01-a.md", "caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match="01-a.md: error: it is not UTF-8 text"):
        bundles.read_issue_zip(out.getvalue())


def test_publications_add_keeps_the_files_the_console_lays_issues_out_with(cli, session):
    from sqlalchemy import select

    from newsletter.store.models import PublicationFile

    result = cli("publications", "add", str(SAMPLE_ISSUE.parent.parent))
    assert result.exit_code == 0, result.output
    kept = {f.name: f.data for f in session.scalars(select(PublicationFile))}
    assert sorted(kept) == ["logo.png", "publication.yaml"]
    assert kept["logo.png"] == (SAMPLE_ISSUE.parent.parent / "logo.png").read_bytes()


@pytest.fixture
def sample_copy(tmp_path):
    """The sample publication's folder, to break."""
    import shutil

    root = tmp_path / "pub"
    shutil.copytree(SAMPLE_ISSUE.parent.parent, root)
    return root / "issues" / SAMPLE_ISSUE.name


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_every_finding_of_every_check_is_shown_at_once_each_at_its_field(sample_copy):
    from newsletter.console.findings import check_folder

    chart = sample_copy / "05-vaccination-chart.md"
    chart.write_text("".join(line for line in chart.read_text().splitlines(keepends=True)
                             if not line.startswith("alt:")))  # the picture's alt text is gone
    _edit(sample_copy / "02-priorities.md", "url: https://", "url: http://")
    manifest = sample_copy / "issue.yaml"
    _edit(manifest, 'subject: "', 'subject: "A subject much longer than any phone shows in its list of messages: ')
    rendered, findings = check_folder(sample_copy)
    assert rendered is None  # an error in the files: nothing to preview or send
    by_field = {(f.file, f.field): f for f in findings}
    assert "has no `alt` text" in by_field[("05-vaccination-chart.md", "alt")].message
    assert by_field[("02-priorities.md", "items-0-url")].is_error
    assert "subject is" in by_field[("issue.yaml", "subject")].message


def test_a_missing_field_of_a_nested_picture_is_at_that_field(sample_copy):
    from newsletter.console.findings import check_folder

    chair = sample_copy / "01-chair.md"
    _edit(chair, "kind: letter", "kind: letter\nimage:\n  src: ../../logo.png")
    _rendered, findings = check_folder(sample_copy)
    assert [f.field for f in findings if "no `alt`" in f.message and f.file == "01-chair.md"] == ["image_alt"]
