"""Reading an export: a .zip archive or its unpacked folder, never outside it."""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from subscriptions.services.imports import (
    ImportFileError,
    ImportReport,
)

# What reading a damaged archive member raises (bad CRC, corrupt or truncated data).
DAMAGED_MEMBER = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


class Export:
    """Read access to the files of an export, from a zip archive or a folder."""

    def __init__(self, *, files: dict[str, str], zip_file: zipfile.ZipFile | None, root: Path):
        self.files = files  # export name (posix, relative) -> name in zip or path on disk
        self.zip_file = zip_file
        self.root = root

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def open(self, name: str) -> IO[bytes]:
        if self.zip_file is not None:
            return self.zip_file.open(self.files[name])
        return (self.root / self.files[name]).open("rb")

    def size(self, name: str) -> int:
        if self.zip_file is not None:
            return self.zip_file.getinfo(self.files[name]).file_size
        return (self.root / self.files[name]).stat().st_size


def _safe_name(name: str) -> str | None:
    """The member name as a relative posix path, or None if it tries to leave the export."""
    if "\\" in name or name.startswith("/") or re.match(r"^[a-zA-Z]:", name):
        return None
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        return None
    return str(PurePosixPath(*parts)) if parts else None


@contextmanager
def open_export(*, path: Path, report: ImportReport) -> Iterator[Export]:
    if not path.exists():
        raise ImportFileError(f"{path}: no such file or folder")
    raw: dict[str, str] = {}
    zip_file = None
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file() and not file.is_symlink():
                raw[file.relative_to(path).as_posix()] = file.relative_to(path).as_posix()
    else:
        try:
            zip_file = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImportFileError(f"{path}: not a zip archive or folder ({exc})") from None
        for info in zip_file.infolist():
            if info.is_dir():
                continue
            safe = _safe_name(info.filename)
            if safe is None:
                report.reject(
                    file=info.filename,
                    line=0,
                    message="unsafe path in the archive (outside the export); skipped",
                )
                continue
            raw[safe] = info.filename
    # Some archives wrap everything in one top folder: read posts.csv's folder as the root.
    candidates = sorted((n for n in raw if PurePosixPath(n).name == "posts.csv"), key=len)
    prefix = str(PurePosixPath(candidates[0]).parent) + "/" if candidates else ""
    if prefix == "./":
        prefix = ""
    files = {n[len(prefix) :]: target for n, target in raw.items() if n.startswith(prefix)}
    try:
        yield Export(files=files, zip_file=zip_file, root=path)
    finally:
        if zip_file is not None:
            zip_file.close()
