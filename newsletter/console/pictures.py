"""A publication's picture library: a picture is uploaded once, with its
description, and picked in any issue's sections from thumbnails.

A picture is checked as any upload is (``images.check_image``: a picture
format mail clients show, at most 2 MB and 4000 pixels a side, not a
decompression bomb). Picking one in a section copies it into the issue's
folder under its name, so the issue's download holds it and
``newsletter check`` reads it like any other picture; the section's
description is the library's unless the editor wrote another.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Mapping

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.console import drafts
from newsletter.console.images import check_image
from newsletter.errors import InputError, NotFound, Problem
from newsletter.store.models import Draft, Picture

THUMBNAIL = 160  # pixels, the longer side
PICK = "--pick"  # a form field "<field>--pick" holds the name of the picture chosen for <field>


def add_picture(session: Session, publication_id: int, file_name: str, data: bytes, alt: str, decorative: bool,
                actor: str) -> Picture:
    """Keep a checked picture with its description; InputError (field "image" or "alt") otherwise."""
    name = PurePosixPath((file_name or "").replace("\\", "/")).name
    if not name:
        raise InputError(Problem("image", "no file was chosen", "choose a picture"))
    alt = " ".join(alt.split())
    if not alt and not decorative:
        raise InputError(Problem("alt", "a picture needs a description for people who cannot see it",
                                 "say what it shows, or tick that it is only decoration"))
    picture = check_image(name, data)  # Problem.where is the file's name
    taken = session.scalar(select(Picture.id).where(Picture.publication_id == publication_id, Picture.name == name))
    if taken is not None:
        raise InputError(Problem(name, "the library has a picture of that name already",
                                 "pick that one in a section, or rename the file and upload it again"))
    row = Picture(publication_id=publication_id, name=name, data=data, thumbnail=thumbnail(data),
                  width=picture.width, height=picture.height, alt="" if decorative else alt, uploaded_by=actor)
    session.add(row)
    session.flush()
    return row


def thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as picture:
        picture.seek(0)
        small = picture.convert("RGBA")
        small.thumbnail((THUMBNAIL, THUMBNAIL))
        out = io.BytesIO()
        small.save(out, "PNG", optimize=True)
    return out.getvalue()


def library(session: Session, publication_id: int) -> list[Picture]:
    """The publication's pictures, newest first."""
    return list(session.scalars(select(Picture).where(Picture.publication_id == publication_id)
                                .order_by(Picture.created_at.desc(), Picture.id.desc())))


def get_picture(session: Session, picture_id: int) -> Picture:
    row = session.get(Picture, picture_id)
    if row is None:
        raise NotFound(f"there is no picture {picture_id}")
    return row


def alt_field(field: str) -> str:
    """The description field beside a picture field: src -> alt, items-0-image_src -> items-0-image_alt."""
    return field[: -len("src")] + "alt"


def with_picks(session: Session, draft: Draft, form: Mapping[str, str], actor: str) -> dict[str, str]:
    """The posted section form with each picture picked from the library in its field,
    the library's description where the form's is empty, and the picture copied into the issue."""
    values = dict(form.items())
    for key, name in form.items():
        if not key.endswith(PICK) or not name:
            continue
        field = key[: -len(PICK)]
        picture = session.scalars(select(Picture).where(Picture.publication_id == draft.publication_id,
                                                        Picture.name == name)).one_or_none()
        if picture is None:
            raise InputError(Problem(field, f"the library has no picture {name!r}", "reload the page and pick again"))
        values[field] = picture.name
        if not values.get(alt_field(field), "").strip():
            values[alt_field(field)] = picture.alt
        if picture.name not in drafts.files_of(session, draft.id):
            drafts.save_file(session, draft, picture.name, picture.data, None, actor)
    return values
