"""Rules of the landing zone: what is ignored, which source a file belongs to,
where it goes after a load, and how a path is resolved safely inside the zone.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from .errors import PermanentError

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ARCHIVE_DIR = "_archive"
QUARANTINE_DIR = "_quarantine"
PAYLOADS_DIR = "_payloads"  # API bodies too large to travel in their event
# Quarantine folder for files that sit directly in the landing root (no source
# folder); "_" keeps it out of the source-name space.
NO_SOURCE = "_no_source"


def is_ignored_name(name: str) -> bool:
    """Names the watcher never publishes: hidden, underscored, temporary."""
    return name.startswith((".", "_")) or name.endswith(IGNORED_SUFFIXES)


def is_ignored(relative: PurePosixPath) -> bool:
    """True when any part of a landing-relative path is ignored."""
    return any(is_ignored_name(part) for part in relative.parts)


def source_of(relative: PurePosixPath) -> str | None:
    """The source folder of a landing-relative path, or None for a file in the root."""
    return relative.parts[0] if len(relative.parts) > 1 else None


@dataclass(frozen=True)
class Location:
    """Where an event's file sits: its source folder, the sub-folders below
    it, and whether it is in quarantine (a replay loads it from there)."""

    source: str
    inner: tuple[str, ...]
    quarantined: bool


def locate(relative: PurePosixPath) -> Location:
    parts = relative.parts
    if parts[0] == QUARANTINE_DIR and len(parts) >= 3:
        return Location(parts[1], parts[2:-1], True)
    if len(parts) > 1:
        return Location(parts[0], parts[1:-1], False)
    return Location(NO_SOURCE, (), False)


# A file name that is not valid UTF-8 reaches Python as a str holding
# surrogate escapes U+DC80..U+DCFF (one per undecodable byte); any other
# surrogate, or a NUL, cannot be part of a path.
_NOT_IN_A_PATH = re.compile("[\x00\ud800-\udc7f\udd00-\udfff]")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    if code == 0 or 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code & 0xFF:02x}"  # U+0000, or a byte of a name that is not UTF-8
    return f"\\u{code:04x}"  # a lone surrogate from elsewhere


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL, logs and terminals can hold it: U+0000 and
    lone surrogates shown as escapes; the bytes of a file name that is not
    UTF-8 (which Python holds as surrogate escapes) as ``\\xNN``."""
    return _UNSTORABLE.sub(_escape, text) if _UNSTORABLE.search(text) else text


def display_path(path: str) -> str:
    """``path`` for tables, logs and messages (the file keeps its name on
    disk; ``from_display`` finds it again)."""
    return storable_text(path)


def from_display(path: str) -> str:
    """The path that ``display_path`` showed as ``path`` (its ``\\xNN``
    escapes turned back into bytes)."""
    if "\\x" not in path:
        return path
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), path.encode("utf-8"))
    return os.fsdecode(raw)


def check_event_path(source: str, path: str, trigger: str = "file") -> Location:
    """Where a file event's ``path`` may point, or ``bad_event``.

    An event may only name a file of its own source's folder
    (``<source>/.../<name>``, no ignored part), a file in the landing root for
    the ``_no_source`` pseudo-source, or, for a replay, a quarantined file of
    its source (``_quarantine/<source>/...``). Nothing is opened or moved
    for an event that fails this.
    """
    def refuse(why: str) -> PermanentError:
        return PermanentError("bad_event", f"event path {display_path(path)!r} {why}", path=display_path(path))

    if not path or _NOT_IN_A_PATH.search(path):
        raise refuse("is empty or holds characters no file name can hold")
    relative = PurePosixPath(path)
    if relative.is_absolute() or relative.as_posix() != path or ".." in relative.parts:
        raise refuse("is not a plain relative path inside the landing zone")
    parts = relative.parts
    if parts[0] == QUARANTINE_DIR:
        if trigger != "replay" or len(parts) < 3 or parts[1] != source or is_ignored(PurePosixPath(*parts[2:])):
            raise refuse(f"is not a quarantined file of source {display_path(source)!r} named by a replay")
        return Location(parts[1], parts[2:-1], True)
    if source == NO_SOURCE:
        if len(parts) != 1 or is_ignored_name(parts[0]):
            raise refuse("is not a file in the landing root")
        return Location(NO_SOURCE, (), False)
    if len(parts) < 2 or parts[0] != source or is_ignored(relative):
        raise refuse(f"is not a file in the folder of source {display_path(source)!r}")
    return Location(parts[0], parts[1:-1], False)


def check_payload_path(source: str, path: str) -> None:
    """A stored payload lies under ``_payloads/<source>/``; else ``bad_event``."""
    relative = PurePosixPath(path)
    if (_NOT_IN_A_PATH.search(path) or relative.is_absolute() or relative.as_posix() != path
            or ".." in relative.parts or len(relative.parts) < 3 or relative.parts[:2] != (PAYLOADS_DIR, source)):
        raise PermanentError("bad_event", f"payload path {display_path(path)!r} is not under "
                             f"{PAYLOADS_DIR}/{source}/", path=display_path(path))


def movable_entry(landing_dir: Path, relative: str) -> Path | None:
    """The file system entry at ``relative`` if it may be moved out of the
    way: a regular file, or a symlink (the link itself, wherever it
    points), whose folder lies inside the zone. None for anything else
    (a folder, a path through a symlinked folder, nothing at all)."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or _NOT_IN_A_PATH.search(relative):
        return None
    root = landing_dir.resolve()
    entry = root.joinpath(*rel.parts)
    parent = Path(os.path.realpath(entry.parent))
    if parent != root and root not in parent.parents:
        return None
    try:
        mode = os.lstat(entry).st_mode
    except OSError:
        return None
    return entry if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else None


def resolve_in_landing(landing_dir: Path, relative: str) -> Path:
    """The absolute path of ``relative``, refusing anything that leaves the zone.

    Refuses absolute paths, ``..`` segments and symlinks (of the file or of a
    folder on the way) that resolve outside the landing zone, with
    ``path_rejected``.
    """
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or _NOT_IN_A_PATH.search(relative):
        raise PermanentError("path_rejected", "path is absolute, contains '..' or cannot name a file",
                             path=display_path(relative))
    root = landing_dir.resolve()
    candidate = root.joinpath(*rel.parts)
    real = Path(os.path.realpath(candidate))
    if real != root and root not in real.parents:
        raise PermanentError("path_rejected", "path resolves outside the landing zone (a symlink?)",
                             path=display_path(relative))
    return candidate


MAX_NAME_BYTES = 255


def _fit(stem: str, rest: str) -> str:
    """``stem + rest``, the stem shortened so that the name fits the file system."""
    while len((stem + rest).encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    return stem + rest


def _unique_target(folder: Path, name: str, tag: str) -> Path:
    """``name`` in ``folder``, or ``<stem>.<tag>[-n].<ext>`` if it is taken."""
    target = folder / name
    if not target.exists() and not target.is_symlink():
        return target
    stem, dot, ext = name.partition(".")
    for n in range(1000):
        suffix = f"{tag}" if n == 0 else f"{tag}-{n}"
        candidate = folder / (_fit(stem, f".{suffix}{dot}{ext}") if dot else _fit(name, f".{suffix}"))
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise OSError(f"no free name for {name} in {folder}")


def archive_path(landing_dir: Path, location: Location, when: float | None = None) -> Path:
    """Folder ``_archive/<source>/YYYY/MM/DD/<sub-folders>`` for a loaded file."""
    day = datetime.fromtimestamp(when or time.time(), tz=UTC)
    return landing_dir.joinpath(ARCHIVE_DIR, location.source, f"{day:%Y}", f"{day:%m}", f"{day:%d}",
                                *location.inner)


def quarantine_path(landing_dir: Path, location: Location) -> Path:
    """Folder ``_quarantine/<source>/<sub-folders>`` for a dead-lettered file."""
    return landing_dir.joinpath(QUARANTINE_DIR, location.source, *location.inner)


@dataclass(frozen=True)
class Moved:
    """Where a file ended up (landing-relative), or why it could not be moved."""

    relative: str | None
    error: str | None = None


def move_file(landing_dir: Path, path: Path, folder: Path, tag: str) -> Moved:
    """Move ``path`` into ``folder`` without overwriting anything there.

    Never raises for file-system trouble: the caller's load has already
    committed (or the dead letter is recorded), so a failed move is reported,
    not retried.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = _unique_target(folder, path.name, tag)
        shutil.move(str(path), str(target))
        return Moved(display_path(target.relative_to(landing_dir).as_posix()))
    except OSError as exc:
        return Moved(None, f"{type(exc).__name__}: {exc.strerror or exc}")
