"""Lists and segments: import a CSV into a list (upload, preview and mapping,
progress, report), download a list or a segment as CSV, and build segments."""

from __future__ import annotations

import re

from flask import Response, abort, g, jsonify, request, stream_with_context, url_for
from sqlalchemy import select

from newsletter.audience import csv_export, segments
from newsletter.console import imports, segment_form
from newsletter.accounts import audit
from newsletter.web import auth
from newsletter.errors import InputError, NotFound
from newsletter.store.models import ImportJob, MailingList, PublicationRow
from newsletter.web.console import blueprint, done, page, problem_text, require, roles_in, visible_publications
from newsletter.web.pages import database, settings

POLL_SECONDS = 2
FORM_ROWS = 2  # empty rows the segment form offers below the filled ones


def _record(db, publication_id: int, action: str, detail: str = "") -> None:
    """The audit log: who did it, from where (imports and downloads concern people's data)."""
    audit.record(db, g.operator.email, action, detail, client=auth.client_address(), publication_id=publication_id)


def _publication(db, slug: str, role: str | None = None) -> PublicationRow:
    """The publication named by ``slug`` (or the account's first), with the role checked."""
    publications = visible_publications(db)
    if not publications:
        abort(403, "this account has no role in any publication")
    found = next((p for p in publications if p.slug == slug), None) if slug else publications[0]
    if found is None:
        abort(404)
    require(db, found.id, role)
    return found


@blueprint.get("/audience")
def audience():
    with database() as db:
        publication = _publication(db, request.args.get("publication", ""))
        lists = segment_form.list_slugs(db, publication)
        sizes = {a.list_slug: a for a in _sizes(db, publication)}
        saved = [(segment, segments.segment_preview(db, segment).count)
                 for _slug, segment in segments.list_segments(db, publication.slug)]
        jobs = imports.recent_jobs(db, [publication.id])
        names = dict(db.execute(select(MailingList.id, MailingList.name)).all())
        return page("console/audience.html", publication=publication, publications=visible_publications(db),
                    lists=[sizes[s] for s in lists if s in sizes], segments=saved, jobs=jobs, list_names=names,
                    may_edit="editor" in roles_in(db, publication.id))


def _sizes(db, publication):
    from newsletter.console.workflow import audience_sizes

    return audience_sizes(db, publication.id)


# --- import --------------------------------------------------------------------------------


@blueprint.get("/imports/new")
def import_form():
    with database() as db:
        publication = _publication(db, request.args.get("publication", ""), "editor")
        return _upload_page(db, publication, [], request.args.get("list", ""))


def _upload_page(db, publication, problems, chosen="", status=200):
    return page("console/import_upload.html", status, publication=publication,
                lists=segment_form.list_slugs(db, publication), chosen=chosen, problems=problems,
                max_mb=imports.MAX_BYTES // 1024 // 1024, inline_rows=imports.INLINE_ROWS)


@blueprint.post("/imports")
def import_upload():
    slug, list_slug = request.form.get("publication", ""), request.form.get("list", "")
    with database() as db:
        publication = _publication(db, slug, "editor")
        upload = request.files.get("file")
        try:
            if upload is None or not upload.filename:
                raise InputError("no file was chosen", "file", "choose the CSV file to import")
            job = imports.create_job(db, publication, list_slug, upload.filename, upload.read(), g.operator.email,
                                     request.form.get("status", "confirmed"))
        except (InputError, NotFound) as exc:
            db.rollback()
            return _upload_page(db, publication, problem_text(exc), list_slug, status=400)
        job_id = job.id
    return done("File uploaded: check the columns below, then import.", url_for("console.import_page", job_id=job_id))


def _job(db, job_id: int, role: str | None = None) -> tuple[ImportJob, PublicationRow]:
    job = db.get(ImportJob, job_id)
    if job is None:
        abort(404)
    require(db, job.publication_id, role)
    return job, db.get(PublicationRow, job.publication_id)


@blueprint.get("/imports/<int:job_id>")
def import_page(job_id: int):
    with database() as db:
        job, publication = _job(db, job_id)
        return _job_page(db, job, publication, [])


def _job_page(db, job, publication, problems, status=200):
    mailing_list = db.get(MailingList, job.list_id)
    return page("console/import.html", status, publication=publication, job=job, list=mailing_list,
                mapping=imports.mapping_of(job), rows=imports.preview_rows(job), targets=imports.TARGET_LABELS,
                problems=problems, poll_seconds=POLL_SECONDS, inline_rows=imports.INLINE_ROWS,
                shown_problems=(job.problems or [])[:200])


@blueprint.post("/imports/<int:job_id>/mapping")
def import_mapping(job_id: int):
    with database() as db:
        job, publication = _job(db, job_id, "editor")
        count = len(job.columns)
        targets = [request.form.get(f"target-{n}", "ignore") for n in range(count)]
        names = [request.form.get(f"field-{n}", "") for n in range(count)]
        try:
            imports.set_mapping(db, job, targets, names)
            imports.start(db, job)
        except InputError as exc:
            return _job_page(db, job, publication, problem_text(exc), status=400)
        inline = imports.runs_inline(job)
        mailing_list = db.get(MailingList, job.list_id)
        _record(db, job.publication_id, "imported a CSV file",
                f"{job.filename} ({job.rows_total} rows) into {mailing_list.slug}, import {job.id}")
        db.commit()
        if inline:
            imports.run_job(db, job_id, settings())
    text = "Imported." if inline else "The import has started: this page follows it."
    return done(text, url_for("console.import_page", job_id=job_id))


@blueprint.get("/imports/<int:job_id>/progress.json")
def import_progress(job_id: int):
    with database() as db:
        job, _publication = _job(db, job_id)
        return jsonify(imports.job_dict(job))


@blueprint.get("/imports/<int:job_id>/problems.csv")
def import_problems(job_id: int):
    with database() as db:
        job, publication = _job(db, job_id)
        data, stem = imports.problems_csv(job), re.sub(r"[^A-Za-z0-9._-]+", "_", job.filename.rsplit(".", 1)[0])
    return Response(data, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{stem}-rejected-rows.csv"'})


# --- export --------------------------------------------------------------------------------


def _download(make, filename: str, what: str):
    """A CSV produced page by page while it is sent; the session lives as long as the response."""
    publication_slug = request.args.get("publication", "")

    def pages():
        with database() as db:
            yield from make(db, _publication(db, publication_slug, "editor"))

    # Problems (no such list or segment, no role) are found before the first byte goes out.
    with database() as db:
        publication = _publication(db, publication_slug, "editor")
        try:
            make(db, publication)
        except (InputError, NotFound) as exc:
            abort(404, " ".join(problem_text(exc)))
        _record(db, publication.id, "downloaded as CSV", what)
    return Response(stream_with_context(pages()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@blueprint.get("/lists/<slug>/export.csv")
def export_list(slug: str):
    return _download(lambda db, publication: csv_export.list_export(db, publication, slug), f"{slug}.csv", f"list {slug}")


@blueprint.get("/segments/<name>/export.csv")
def export_segment(name: str):
    return _download(lambda db, publication: csv_export.segment_export(db, publication, name), f"segment-{name}.csv",
                     f"segment {name}")


# --- segments ------------------------------------------------------------------------------


@blueprint.route("/segments/new", methods=["GET", "POST"])
def segment_new():
    values = request.form if request.method == "POST" else request.args
    with database() as db:
        publication = _publication(db, values.get("publication", ""), "editor")
        rules = segment_form.rules_from_form(values.getlist("field"), values.getlist("operator"), values.getlist("value"))
        joiner, name = values.get("join", "and"), values.get("name", "").strip()
        description = values.get("description", "")
        condition, found, errors, problems = "", None, {}, []
        if rules:
            try:
                if request.method == "POST" and values.get("do") == "save":
                    segment = segment_form.save(db, publication, name, rules, joiner, description)
                    _record(db, publication.id, "saved a segment", f"{segment.name}: {segment.condition}")
                    text = f"Segment {segment.name} saved: {segment.condition}"
                    return done(text, url_for("console.audience", publication=publication.slug) + "#segments")
                condition, found = segment_form.check(db, publication, rules, joiner)
            except (InputError, NotFound) as exc:
                db.rollback()
                for p in getattr(exc, "rule_problems", []):
                    if p.row is not None:
                        errors.setdefault(p.row, []).append(p.message + (f" ({p.fix})" if p.fix else ""))
                problems = [t for p, t in zip(getattr(exc, "problems", [None]), problem_text(exc))
                            if not _on_a_row(exc, p)]
                try:
                    condition = segment_form.condition_text(rules, joiner)[0]
                except InputError:
                    condition = ""
        elif request.method == "POST":
            problems = ["the segment has no rule: choose a field, an operator and a value"]
        status = 400 if (errors or problems) and (request.method == "POST" or rules) else 200
        return page("console/segment_new.html", status, publication=publication, rules=rules + [segment_form.Rule()] * FORM_ROWS,
                    joiner=joiner, name=name, description=description, condition=condition, found=found,
                    errors=errors, problems=problems, fields=segment_form.fields(db, publication),
                    operators=segment_form.OPERATORS, lists=segment_form.list_slugs(db, publication))


def _on_a_row(exc, problem) -> bool:
    return any(p.row is not None and p.message == problem.message for p in getattr(exc, "rule_problems", []))
