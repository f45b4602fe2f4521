"""An issue as a .zip: uploaded to start a draft, downloaded for the CLI.

A download holds the publication's folder with the issue inside it::

    <publication>/publication.yaml, its logo, templates/...
    <publication>/issues/<issue>/issue.yaml, section files, images

so ``newsletter check <publication>/issues/<issue>`` accepts it as it is.
An upload may be that, or just an issue folder: the folder holding
``issue.yaml`` is taken, and nothing outside it.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from newsletter.console.images import check_image
from newsletter.authoring.fields import IMAGE_SUFFIXES
from newsletter.authoring.content import MANIFEST_FILE
from newsletter.errors import InputError, Problem

MAX_FILES = 200
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_TOTAL_BYTES = 20 * 1024 * 1024
TEXT_SUFFIXES = (".md", ".yaml", ".yml")


@dataclass
class Upload:
    files: dict[str, bytes]
    skipped: list[str] = field(default_factory=list)  # files left out, for the page to say so


def read_issue_zip(data: bytes, zip_name: str = "the .zip file") -> Upload:
    """The issue folder's files from an uploaded zip, every one checked; InputError otherwise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [e for e in archive.infolist() if not e.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise InputError(Problem(zip_name, "it is not a readable .zip file (it may be damaged, or not a zip at all)",
                                 "make the zip again from the issue's folder and upload that")) from None
    if len(entries) > MAX_FILES:
        raise InputError(Problem(zip_name, f"it holds {len(entries)} files; at most {MAX_FILES}",
                                 "zip only the issue's folder"))
    for entry in entries:
        _check_entry(entry, zip_name)
    folder = _issue_folder(entries, zip_name)
    upload, total = Upload({}), 0
    for entry in entries:
        path = PurePosixPath(entry.filename)
        if folder not in path.parents:
            continue
        name = path.relative_to(folder).as_posix()
        if name.startswith(".") or "/." in name or "__MACOSX" in name:
            continue
        suffix = path.suffix.lower()
        if suffix not in TEXT_SUFFIXES + IMAGE_SUFFIXES:
            upload.skipped.append(name)
            continue
        if entry.file_size > MAX_FILE_BYTES:
            raise InputError(Problem(name, f"it is {entry.file_size / 1024 / 1024:.1f} MB; at most "
                                           f"{MAX_FILE_BYTES // 1024 // 1024} MB per file", "make it smaller"))
        total += entry.file_size
        if total > MAX_TOTAL_BYTES:
            raise InputError(Problem(zip_name, f"its files add up to more than {MAX_TOTAL_BYTES // 1024 // 1024} MB",
                                     "make the pictures smaller"))
        content = _read(archive, entry, zip_name)
        if suffix in IMAGE_SUFFIXES:
            check_image(name, content)
        else:
            _check_text(name, content)
        upload.files[name] = content
    return upload


def _check_entry(entry: zipfile.ZipInfo, zip_name: str) -> None:
    name = entry.filename
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
        raise InputError(Problem(zip_name, f"{name!r} would be written outside the issue's folder",
                                 "zip the folder itself, without absolute paths or '..'; nothing was stored"))
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise InputError(Problem(zip_name, f"{name!r} is a symbolic link", "zip the files themselves"))


def _issue_folder(entries: list[zipfile.ZipInfo], zip_name: str) -> PurePosixPath:
    manifests = sorted((PurePosixPath(e.filename) for e in entries if PurePosixPath(e.filename).name == MANIFEST_FILE),
                       key=lambda p: len(p.parts))
    if not manifests:
        raise InputError(Problem(zip_name, f"there is no {MANIFEST_FILE} in it",
                                 "zip the issue's folder, the one holding issue.yaml"))
    if len(manifests) > 1 and len(manifests[0].parts) == len(manifests[1].parts):
        raise InputError(Problem(zip_name, f"it holds {len(manifests)} issues",
                                 "upload one issue's folder at a time"))
    return manifests[0].parent


def _read(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, zip_name: str) -> bytes:
    try:
        with archive.open(entry) as stream:
            content = stream.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InputError(Problem(zip_name, f"{entry.filename} cannot be read from it ({exc})",
                                 "make the zip again and upload that")) from None
    if len(content) > MAX_FILE_BYTES:  # the header lied about the size
        raise InputError(Problem(entry.filename, f"it is larger than {MAX_FILE_BYTES // 1024 // 1024} MB",
                                 "make it smaller"))
    return content


def _check_text(name: str, content: bytes) -> None:
    try:
        content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(Problem(name, "it is not UTF-8 text",
                                 "save it as UTF-8 (most editors offer this under 'Save with encoding')")) from None


def issue_zip(publication_slug: str, publication_files: dict[str, bytes], issue_slug: str,
              issue_files: dict[str, bytes]) -> bytes:
    """The publication's folder with this one issue in it, as a .zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(publication_files.items()):
            archive.writestr(f"{publication_slug}/{name}", data)
        for name, data in sorted(issue_files.items()):
            archive.writestr(f"{publication_slug}/issues/{issue_slug}/{name}", data)
    return out.getvalue()
