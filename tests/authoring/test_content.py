"""Loading an issue folder: every section kind, the sample, and every mistake."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from newsletter.authoring.content import load_issue, load_publication
from newsletter.errors import InputError

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE_ISSUE = ROOT / "examples" / "together-were-better" / "issues" / "2021-09"

# The smallest valid PNG: one transparent pixel.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)

PUBLICATION = """\
name: The Example Bulletin
from_email: news@example.org
postal_address: 1 Example Street, Exampletown
web_base_url: https://news.example.org/bulletin/
logo: logo.png
colours:
  primary: "#123456"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def manifest(*sections: str, date_line: str = "date: 2021-09-01") -> str:
    listed = "".join(f"  - {name}\n" for name in sections)
    return f"title: Bulletin\nsubject: The September bulletin\npreheader: News\n{date_line}\nsections:\n{listed}"


@pytest.fixture
def issue_dir(tmp_path: Path) -> Path:
    (tmp_path / "logo.png").write_bytes(PNG)
    write(tmp_path, "publication.yaml", PUBLICATION)
    folder = tmp_path / "issues" / "2021-09"
    folder.mkdir(parents=True)
    (folder / "photo.png").write_bytes(PNG)
    return folder


def problems_of(folder: Path) -> list:
    with pytest.raises(InputError) as caught:
        load_issue(folder)
    return caught.value.problems


def problem_at(problems: list, file_and_line: str):
    """The one problem reported at a file:line (or file), failing clearly otherwise."""
    found = [p for p in problems if p.where.endswith(file_and_line)]
    assert len(found) == 1, f"expected one problem at {file_and_line}, got: {[str(p) for p in problems]}"
    assert found[0].fix, "every problem says what to do"
    return found[0]


ALL_KINDS = {
    "01-letter.md": """\
        ---
        kind: letter
        title: From the chair
        author: A. Chair
        role: Independent Chair
        signoff: With best wishes
        image:
          src: photo.png
          alt: The chair at the board meeting
        ---

        Dear colleagues,

        Thank you.
        """,
    "02-teasers.md": """\
        ---
        kind: teasers
        title: Priorities
        items:
          - heading: Savings
            summary: We launched the *savings* programme.
            article: |
              The full story.

              Second paragraph.
          - heading: Frailty
            summary: Discussions have started.
            url: https://www.example.org/frailty
            link_text: Find out more
            image:
              src: photo.png
              decorative: true
        ---
        """,
    "03-news.md": """\
        ---
        kind: news
        items:
          - heading: An award
            slug: award-2021
            summary: Shortlisted.
            url: https://www.example.org/award
        ---
        """,
    "04-figures.md": """\
        ---
        kind: figures
        title: Vaccinations
        figures:
          - value: "835,002"
            label: first doses
          - value: 88.7%
            label: of the local target
        ---

        The text under the figures.
        """,
    "05-image.md": """\
        ---
        kind: image
        src: photo.png
        alt: A stall at the festival
        caption: Our stall
        link: https://www.example.org/photos
        width: 600
        ---
        """,
    "06-text.md": """\
        ---
        kind: text
        id: one-one-one
        title: NHS 111
        ---
        Use **111** online.
        """,
}


def write_all_kinds(folder: Path) -> None:
    for name, text in ALL_KINDS.items():
        write(folder, name, text)
    write(folder, "issue.yaml", manifest(*ALL_KINDS))


def test_every_section_kind_loads_with_its_fields(issue_dir):
    write_all_kinds(issue_dir)
    issue = load_issue(issue_dir)

    assert issue.slug == "2021-09" and issue.issue_date == date(2021, 9, 1)
    assert (issue.title, issue.subject, issue.preheader) == ("Bulletin", "The September bulletin", "News")
    assert [s.kind for s in issue.sections] == ["letter", "teasers", "news", "figures", "image", "text"]
    assert [s.id for s in issue.sections] == ["letter", "teasers", "news", "figures", "image", "one-one-one"]
    letter, teasers, news, figures, image, text = issue.sections

    assert (letter.author, letter.role, letter.signoff) == ("A. Chair", "Independent Chair", "With best wishes")
    assert letter.body.startswith("Dear colleagues,") and letter.body_line == 12
    assert letter.image.alt == "The chair at the board meeting" and letter.image.path == issue_dir / "photo.png"

    savings, frailty = teasers.items
    assert savings.slug == "savings" and savings.url is None
    assert savings.article.startswith("The full story.") and "Second paragraph." in savings.article
    assert savings.link_text == "Read more"
    assert frailty.url == "https://www.example.org/frailty" and frailty.article is None
    assert frailty.link_text == "Find out more"
    assert frailty.image.decorative and frailty.image.alt == ""
    assert news.items[0].slug == "award-2021"

    assert [(f.value, f.label) for f in figures.figures] == [("835,002", "first doses"), ("88.7%", "of the local target")]
    assert figures.body == "The text under the figures."
    assert (image.image.caption, image.image.link, image.image.width) == (
        "Our stall", "https://www.example.org/photos", 600)
    assert (text.title, text.body, text.body_line) == ("NHS 111", "Use **111** online.", 6)


def test_values_remember_their_file_and_line(issue_dir):
    write_all_kinds(issue_dir)
    issue = load_issue(issue_dir)
    teasers = issue.sections[1]
    assert teasers.source.path.name == "02-teasers.md" and teasers.source.line == 2
    assert [item.source.line for item in teasers.items] == [5, 11]
    assert issue.sections[4].image.source.line == 3


def test_publication_is_found_in_a_parent_folder(issue_dir):
    write_all_kinds(issue_dir)
    publication = load_issue(issue_dir).publication
    assert publication.name == "The Example Bulletin"
    assert publication.from_name == "The Example Bulletin" and publication.reply_to == "news@example.org"
    assert publication.colours.primary == "#123456" and publication.colours.accent == "#41b6e6"
    assert publication.logo.read_bytes() == PNG
    # No slug given: it comes from the folder name, made fit for web addresses.
    assert publication.slug == issue_dir.parent.parent.name.lower().replace("_", "-")


def test_sample_issue_loads_completely():
    issue = load_issue(SAMPLE_ISSUE)
    assert issue.publication.name == "Together We're Better"
    assert issue.publication.timezone == "Europe/London" and issue.publication.logo.is_file()
    assert issue.web_url == "https://news.example.org/together-were-better/2021-09/"
    kinds = [s.kind for s in issue.sections]
    assert kinds == ["letter", "teasers", "text", "figures", "image", "text", "news"]
    by_kind = {s.kind: s for s in issue.sections}
    assert by_kind["letter"].author == "Prem Singh" and by_kind["letter"].role == "ICS Independent Chair"
    assert len(by_kind["teasers"].items) == 5 and len(by_kind["news"].items) == 6
    assert sum(1 for item in by_kind["teasers"].items if item.article) == 2
    assert [f.value for f in by_kind["figures"].figures] == ["835,002", "761,532", "88.7%", "100,000th"]
    assert by_kind["image"].image.path.is_file() and by_kind["image"].image.caption


def test_sample_publication_loads_on_its_own():
    publication = load_publication(SAMPLE_ISSUE.parent.parent / "publication.yaml")
    assert publication.from_email.endswith("@example.org") and publication.language == "en-GB"


def test_markdown_files_not_in_the_manifest_are_ignored(issue_dir):
    write(issue_dir, "01-text.md", "---\nkind: text\n---\nHello\n")
    write(issue_dir, "draft.md", "not even front matter")
    write(issue_dir, "issue.yaml", manifest("01-text.md"))
    assert [s.id for s in load_issue(issue_dir).sections] == ["text"]


# --- mistakes ---------------------------------------------------------------------


def test_malformed_yaml_names_the_line_where_the_open_bracket_starts(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-text.md"))
    write(issue_dir, "01-text.md", "---\nkind: text\ntitle: [unclosed\nid: x\n---\nHello\n")
    problem = problem_at(problems_of(issue_dir), "01-text.md:3")
    assert "YAML cannot be read" in problem.message
    assert "on line 4 (while parsing a flow sequence that starts here)" in problem.message


def test_every_yaml_error_in_a_file_is_reported_in_one_pass(issue_dir):
    write(issue_dir, "issue.yaml", "title: News: September\nsubject: Hello\npreheader: Read: this\n"
                                   "date: 2021-09-01\nsections:\n  - 01-text.md\n")
    problems = problems_of(issue_dir)
    assert [p.where.rsplit("/", 1)[-1] for p in problems] == ["issue.yaml:1", "issue.yaml:3"]
    assert all("mapping values are not allowed here" in p.message for p in problems)


def test_an_unclosed_quote_is_reported_where_it_opens(issue_dir):
    write(issue_dir, "issue.yaml", 'title: "September\nsubject: Hello\ndate: 2021-09-01\nsections:\n  - 01-text.md\n')
    [problem] = problems_of(issue_dir)
    assert problem.where.endswith("issue.yaml:1")
    assert "quoted scalar that starts here" in problem.message


def test_unknown_kind_lists_the_kinds_that_exist(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-x.md"))
    write(issue_dir, "01-x.md", "---\ntitle: Hi\nkind: gallery\n---\nHello\n")
    problem = problem_at(problems_of(issue_dir), "01-x.md:3")
    assert "gallery" in problem.message
    assert "letter, teasers, news, figures, image, text" in problem.fix


def test_a_misspelt_kind_or_field_gets_the_nearest_name(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-x.md", "02-y.md"))
    write(issue_dir, "01-x.md", "---\ntitle: Hi\nkind: teaser\n---\nHello\n")
    write(issue_dir, "02-y.md", "---\nkind: letter\nauthor: A\nsignof: Best\n---\nDear all\n")
    problems = problems_of(issue_dir)
    kind, field = problem_at(problems, "01-x.md:3"), problem_at(problems, "02-y.md:4")
    assert kind.fix.startswith("did you mean `teasers`?") and "letter, teasers, news" in kind.fix
    assert field.fix.startswith("did you mean `signoff`?")

    write(issue_dir, "01-x.md", "---\ntitle: Hi\nkind: zzz\n---\nHello\n")  # nothing near it
    assert problem_at(problems_of(issue_dir), "01-x.md:3").fix.startswith("check the spelling; the kinds are")


def test_missing_required_field_names_the_field(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-letter.md"))
    write(issue_dir, "01-letter.md", "---\nkind: letter\nrole: Chair\n---\nDear all\n")
    problem = problem_at(problems_of(issue_dir), "01-letter.md:2")
    assert "`author`" in problem.message and "author:" in problem.fix


def test_field_of_the_wrong_type(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-news.md"))
    write(issue_dir, "01-news.md", """\
        ---
        kind: news
        items:
          - heading: [not, text]
            summary: s
            url: https://www.example.org/a
        ---
        """)
    problem = problem_at(problems_of(issue_dir), "01-news.md:4")
    assert "`heading` should be text" in problem.message


def test_image_file_that_does_not_exist(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-image.md"))
    write(issue_dir, "01-image.md", "---\nkind: image\nalt: A view\nsrc: missing.png\n---\n")
    problem = problem_at(problems_of(issue_dir), "01-image.md:4")
    assert "missing.png" in problem.message and "does not exist" in problem.message


def test_image_needs_alt_text_or_decorative(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-image.md"))
    write(issue_dir, "01-image.md", "---\nkind: image\nsrc: photo.png\n---\n")
    problem = problem_at(problems_of(issue_dir), "01-image.md:2")
    assert "alt" in problem.message and "decorative: true" in problem.fix


def test_listed_section_file_that_is_missing(issue_dir):
    write(issue_dir, "01-text.md", "---\nkind: text\n---\nHello\n")
    write(issue_dir, "issue.yaml", manifest("01-text.md", "02-gone.md"))
    problem = problem_at(problems_of(issue_dir), "issue.yaml:7")
    assert "02-gone.md" in problem.message and "does not exist" in problem.message


def test_duplicate_section_ids(issue_dir):
    write(issue_dir, "01-news.md", "---\nkind: text\n---\nOne\n")
    write(issue_dir, "02-other.md", "---\nkind: text\nid: news\n---\nTwo\n")
    write(issue_dir, "issue.yaml", manifest("01-news.md", "02-other.md"))
    problem = problem_at(problems_of(issue_dir), "02-other.md:2")
    assert "'news'" in problem.message and "01-news.md" in problem.message and "id:" in problem.fix


def test_duplicate_item_slugs_across_sections(issue_dir):
    item = "  - heading: Awards\n    summary: s\n    url: https://www.example.org/{n}\n"
    write(issue_dir, "01-a.md", "---\nkind: news\nitems:\n" + item.format(n=1) + "---\n")
    write(issue_dir, "02-b.md", "---\nkind: teasers\nitems:\n" + item.format(n=2) + "---\n")
    write(issue_dir, "issue.yaml", manifest("01-a.md", "02-b.md"))
    problem = problem_at(problems_of(issue_dir), "02-b.md:4")
    assert "'awards'" in problem.message and "01-a.md:4" in problem.message


@pytest.mark.parametrize("links, expected", [
    ("    url: https://www.example.org/a\n    article: Full text\n", "both `url` and `article`"),
    ("", "neither `url` nor `article`"),
])
def test_item_needs_exactly_one_of_url_and_article(issue_dir, links, expected):
    write(issue_dir, "01-news.md", "---\nkind: news\nitems:\n  - heading: H\n    summary: S\n" + links + "---\n")
    write(issue_dir, "issue.yaml", manifest("01-news.md"))
    problem = problem_at(problems_of(issue_dir), "01-news.md:4")
    assert expected in problem.message


def test_item_url_must_be_https(issue_dir):
    write(issue_dir, "01-news.md", "---\nkind: news\nitems:\n  - heading: H\n    summary: S\n    url: http://www.example.org/a\n---\n")
    write(issue_dir, "issue.yaml", manifest("01-news.md"))
    problem = problem_at(problems_of(issue_dir), "01-news.md:6")
    assert "https://" in problem.message


@pytest.mark.parametrize("date_line", ["date: 2021-09-31", "date: September 2021"])
def test_invalid_date(issue_dir, date_line):
    write(issue_dir, "01-text.md", "---\nkind: text\n---\nHello\n")
    write(issue_dir, "issue.yaml", manifest("01-text.md", date_line=date_line))
    problem = problem_at(problems_of(issue_dir), "issue.yaml:4")
    assert "`date`" in problem.message and "YYYY-MM-DD" in problem.fix


def test_unknown_field_is_reported_with_the_known_ones(issue_dir):
    write(issue_dir, "01-letter.md", "---\nkind: letter\nauthor: A\nsignof: Best\n---\nDear all\n")
    write(issue_dir, "issue.yaml", manifest("01-letter.md"))
    problem = problem_at(problems_of(issue_dir), "01-letter.md:4")
    assert "`signof`" in problem.message and "signoff" in problem.fix


def test_every_problem_is_reported_at_once(issue_dir):
    write(issue_dir, "01-x.md", "---\nkind: gallery\n---\n")
    write(issue_dir, "02-y.md", "---\nkind: letter\n---\n")
    write(issue_dir, "issue.yaml", manifest("01-x.md", "02-y.md", "03-z.md", date_line="date: 2021-02-30"))
    problems = problems_of(issue_dir)
    for where in ("01-x.md:2", "02-y.md:2", "issue.yaml:8", "issue.yaml:4"):
        problem_at(problems, where)
    assert problem_at(problems, "02-y.md:4").message == "the letter has no text"


def test_publication_problems_name_the_publication_file(tmp_path):
    write(tmp_path, "publication.yaml", """\
        name: Bulletin
        from_email: not-an-address
        postal_address: 1 Example Street
        web_base_url: http://news.example.org/
        timezone: Mars/Olympus
        colours:
          primary: blue
        """)
    with pytest.raises(InputError) as caught:
        load_publication(tmp_path / "publication.yaml")
    problems = caught.value.problems
    assert "email address" in problem_at(problems, "publication.yaml:2").message
    assert "https://" in problem_at(problems, "publication.yaml:4").message
    assert "time zone" in problem_at(problems, "publication.yaml:5").message
    assert "hex colour" in problem_at(problems, "publication.yaml:7").message


def test_folder_without_a_manifest(tmp_path):
    with pytest.raises(InputError) as caught:
        load_issue(tmp_path)
    assert "issue.yaml" in str(caught.value)


def test_error_message_lists_every_problem_one_per_line(issue_dir):
    write(issue_dir, "issue.yaml", manifest("01-a.md", "02-b.md"))
    message = str(pytest.raises(InputError, load_issue, issue_dir).value)
    lines = message.split("\n")
    assert len(lines) == 2
    assert "issue.yaml:6: error: the section file 01-a.md does not exist" in lines[0]
    assert "issue.yaml:7: error: the section file 02-b.md does not exist" in lines[1]


def test_a_sign_up_address_must_be_https(tmp_path):
    from newsletter.authoring.content import load_publication
    from newsletter.errors import InputError

    publication = tmp_path / "publication.yaml"
    publication.write_text(
        "name: Example\nfrom_email: news@example.org\npostal_address: 1 Example Street\n"
        "web_base_url: https://news.example.org/\nsignup_url: http://news.example.org/subscribe\n"
    )
    with pytest.raises(InputError) as error:
        load_publication(publication)
    assert "publication.yaml:5" in str(error.value) and "signup_url" in str(error.value)
    publication.write_text(publication.read_text().replace("http://", "https://"))
    assert load_publication(publication).signup_url == "https://news.example.org/subscribe"


def test_a_publication_cannot_take_a_path_of_the_web_app(tmp_path):
    from newsletter.authoring.content import load_publication
    from newsletter.errors import InputError

    publication = tmp_path / "publication.yaml"
    publication.write_text(
        "slug: ops\nname: Example\nfrom_email: news@example.org\npostal_address: 1 Example Street\n"
        "web_base_url: https://news.example.org/\n"
    )
    with pytest.raises(InputError) as error:
        load_publication(publication)
    assert "publication.yaml:1" in str(error.value) and "'ops' is a path of the web app" in str(error.value)
