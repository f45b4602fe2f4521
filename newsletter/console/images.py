"""Pictures uploaded to a draft: checked with Pillow before anything is stored.

Only formats every common mail client shows (``content.IMAGE_SUFFIXES``), of
a size a phone downloads without complaint, and with dimensions that make
sense in a 600-pixel email.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from newsletter.authoring.fields import IMAGE_SUFFIXES
from newsletter.errors import InputError, Problem

MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_SIDE = 4000  # pixels; larger pictures are photos straight off a camera
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}


@dataclass(frozen=True)
class CheckedImage:
    name: str
    format: str
    width: int
    height: int
    size: int


def check_image(name: str, data: bytes) -> CheckedImage:
    """The picture's facts, or InputError saying what is wrong with it and what to do."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(Problem(name, "it is not a picture format email clients show",
                                 f"save it as {', '.join(IMAGE_SUFFIXES)}"))
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(Problem(name, f"it is {len(data) / 1024 / 1024:.1f} MB; at most "
                                       f"{MAX_IMAGE_BYTES // 1024 // 1024} MB is allowed",
                                 "make it smaller (e.g. 1200 pixels wide) before uploading"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as picture:
                picture.verify()
            with Image.open(io.BytesIO(data)) as picture:
                found, (width, height) = picture.format, picture.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Pillow refuses it before reading its pixels: far too many to be a picture for email.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f" ({int(pixels[1]):,})" if pixels else ""
        raise InputError(Problem(name, f"it has too many pixels{count}; at most {MAX_SIDE} x {MAX_SIDE} is taken",
                                 "make it smaller (1200 pixels wide is plenty for an email)")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(Problem(name, "it is not a picture (or the file is damaged)",
                                 "open it in an image program and save it again as PNG or JPEG")) from None
    if found != FORMATS[suffix]:
        raise InputError(Problem(name, f"it is a {found} picture named {suffix}",
                                 f"rename it to end in .{found.lower()}, or save it as {FORMATS[suffix]}"))
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InputError(Problem(name, f"it is {width} x {height} pixels; at most {MAX_SIDE} on a side",
                                 "make it smaller (1200 pixels wide is plenty for an email)"))
    return CheckedImage(name, found, width, height, len(data))
