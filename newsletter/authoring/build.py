"""Build an issue folder into everything a person reviews and a send uses.

``build_issue`` loads, renders and checks the issue, and only when no check
finds an error writes::

    <out>/email.mjml   the MJML the templates produced (what was compiled)
    <out>/email.html   the compiled HTML, per-recipient placeholders in place
    <out>/email.txt    the plain-text part, placeholders in place
    <out>/sample.eml   the complete message a made-up subscriber would get
    <out>/web/...      the public web copy (see webcopy.py), with the archive

Everything is written to a temporary folder beside ``out`` and moved into
place at the end, so a failed build leaves the previous output intact.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.authoring.content import MANIFEST_FILE, load_issue
from newsletter.errors import InputError, Problem
from newsletter.authoring.issue import Issue
from newsletter.authoring.message import Recipient, make_message_id, publication_template
from newsletter.authoring.publishing import checked_render
from newsletter.authoring.render import RenderedIssue, render_issue
from newsletter.authoring.webcopy import write_site
from newsletter.wording import counted

# The made-up subscriber of sample.eml: example.com is reserved for examples.
SAMPLE_READER = Recipient(
    email="reader@example.com",
    name="Sample Reader",
    message_id="",  # set per issue, on the publication's domain
    unsubscribe_url="https://newsletter.example.com/unsubscribe/sample-token",
    preferences_url="https://newsletter.example.com/preferences/sample-token",
)


@dataclass
class BuildResult:
    out_dir: Path
    issue: Issue
    rendered: RenderedIssue
    warnings: list[Problem] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # what -> where, for people


def build_issue(folder: Path, out_dir: Path, templates_dir: Path | None = None) -> BuildResult:
    """Load, render, check and write an issue; raise InputError if any check finds an error."""
    folder, out_dir = Path(folder), Path(out_dir)
    rendered, problems = checked_render(folder, templates_dir)
    issue = rendered.issue
    archive, skipped = _archive_issues(issue, rendered, templates_dir)
    result = BuildResult(out_dir, issue, rendered, warnings=problems + skipped)
    _write_atomically(out_dir, lambda staging: _write_outputs(staging, result, archive, templates_dir))
    result.files = _output_files(out_dir, issue)
    return result


def sample_message(issue: Issue, rendered: RenderedIssue) -> bytes:
    """The complete message SAMPLE_READER would receive, as .eml bytes."""
    pub = issue.publication
    template = publication_template(pub, subject=issue.subject, html=rendered.html, text=rendered.text)
    recipient = Recipient(
        email=SAMPLE_READER.email,
        name=SAMPLE_READER.name,
        message_id=make_message_id(pub.domain, 0, 0),
        unsubscribe_url=SAMPLE_READER.unsubscribe_url,
        preferences_url=SAMPLE_READER.preferences_url,
        web_url=issue.web_url,
    )
    return template.build(recipient)


def _archive_issues(issue: Issue, rendered: RenderedIssue,
                    templates_dir: Path | None) -> tuple[list[RenderedIssue], list[Problem]]:
    """This issue and every sibling issue folder of the same publication that loads and renders.

    A sibling that does not load is left out of the archive with a warning
    rather than failing this build: it may be a draft.
    """
    archive, skipped = [rendered], []
    for sibling in sorted(p for p in issue.folder.parent.iterdir() if (p / MANIFEST_FILE).is_file()):
        if sibling.resolve() == issue.folder.resolve():
            continue
        try:
            other = load_issue(sibling)
            if other.publication.slug == issue.publication.slug:
                archive.append(render_issue(other, templates_dir))
        except InputError as exc:
            skipped.append(Problem(str(sibling), f"left out of the archive: {counted(len(exc.problems), 'problem')}",
                                   f"run `newsletter check {sibling}`", "warning"))
    return archive, skipped


def _write_outputs(staging: Path, result: BuildResult, archive: list[RenderedIssue],
                   templates_dir: Path | None) -> None:
    rendered = result.rendered
    (staging / "email.mjml").write_text(rendered.mjml, encoding="utf-8")
    (staging / "email.html").write_text(rendered.html, encoding="utf-8")
    (staging / "email.txt").write_text(rendered.text, encoding="utf-8")
    (staging / "sample.eml").write_bytes(sample_message(result.issue, rendered))
    write_site(staging / "web", result.issue.publication, archive, templates_dir)


def _write_atomically(out_dir: Path, write) -> None:
    """Run ``write(staging)`` on a fresh folder, then swap it in for out_dir."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the web copy is meant to be served
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        # Two renames keep the window without any output as short as it can be.
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / out_dir.name)
        staging.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out_dir)


def _output_files(out_dir: Path, issue: Issue) -> dict[str, Path]:
    site = out_dir / "web" / issue.publication.slug
    return {
        "MJML source": out_dir / "email.mjml",
        "email HTML": out_dir / "email.html",
        "email text": out_dir / "email.txt",
        "sample message": out_dir / "sample.eml",
        "web copy": site / issue.slug / "index.html",
        "archive": site / "index.html",
        "Atom feed": site / "feed.xml",
    }
