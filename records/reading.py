"""What the readers of every format share: the ``Format`` a format
registers (records/formats.py), the record types, and the reading of a
landed file's bytes before any format sees them: bounded opening (a
content limit that holds for gzip's expansion too), gzip by suffix, the
size checks made before reading, and the refusal of wide encodings
(UTF-16 without its byte order mark, UTF-32), which no format reads.

A reader takes its content and yields records one at a time, so memory
does not grow with the file: ``(value, text)`` pairs, where ``text`` is the
record's exact JSON text for the JSON formats (what bronze stores) and None
where the JSON is encoded from the values (CSV, Parquet). Problems of the
data raise ``PermanentError`` with ``parse_error`` or ``encoding_error``
and where they were found (record or line number).
"""
from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from ingestd.daemon.errors import PermanentError

Record = dict[str, Any]
# A record and its exact JSON text where the format has one (JSON, JSON
# Lines); None where bronze's JSON is encoded from the values (CSV, Parquet).
TextRecord = tuple[Record, bytes | None]
JsonRecord = tuple[Record, bytes]  # the JSON formats always have the text


class _KnownValid:
    """The value of a record whose validity was found before it was read
    back as values (``KNOWN_VALID``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KNOWN_VALID"


# Stands for the value of a record that a format's reader had judged valid
# column by column (``Format.takes_verdicts``): its text is exact as ever, its
# value is not built, and it is not validated again. Only a reader given
# ``valid_rows`` yields it, and only for rows that function found valid.
KNOWN_VALID: Any = _KnownValid()

# One record (a JSON record, a JSON Lines line, a CSV row) may be large, but
# not without bound: past this (landing.max_record_bytes) it is refused as
# too_large before it is held in memory.
MAX_RECORD_BYTES = 16 * 1024 * 1024
# Bytes read at a time (the readers look it up here, so one setting holds for all).
TEXT_CHUNK = 1 << 20
# What a corrupt gzip stream raises while it is read: a parse_error (gzip_guard).
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


class Reader(Protocol):
    """Records of one file: ``(value, text)`` pairs, ``text`` the record's
    exact JSON text where the format has one (JSON, JSON Lines) and None
    where bronze's JSON is encoded from the values (CSV, Parquet).

    ``content`` is the file's content as a buffered binary stream (gzip
    undone, bounded by ``landing.max_file_bytes``), or the file's path for
    a format whose reader seeks (``Format.takes_path``). ``options`` are the
    format's options, every one present (defaults filled in). A record over
    ``max_record_bytes`` is refused as ``too_large`` before it is held;
    with ``exact_numbers`` False nothing validates the values, which may
    then be cheaper. Problems of the data raise ``PermanentError``."""

    def __call__(self, content: Any, options: Mapping[str, Any], max_record_bytes: int, exact_numbers: bool,
                 /) -> Iterator[TextRecord]: ...


_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Format:
    """One file format. ``suffixes`` are matched at the end of a file name,
    after a ``.gz`` is taken off (``formats.format_of``). ``options`` maps
    each source key the format takes to its JSON Schema fragment; a
    fragment's ``default`` is the value when the key is unset (None without
    one). ``takes_path``: the reader is given the file's path, not its
    content stream (it seeks, as Parquet's footer needs; gzip and the
    content bound are then the reader's own). ``takes_verdicts``: the
    reader takes a keyword ``valid_rows``, the validator's judge of a batch
    of rows column by column (consumers/columns.py), and yields
    ``KNOWN_VALID`` as the value of each row it finds valid."""

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    takes_path: bool = False
    takes_verdicts: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"format name {self.name!r}: lower-case letters, digits and _, starting with a letter")
        for suffix in self.suffixes:
            if not suffix.startswith(".") or suffix == ".gz" or len(suffix) < 2:
                raise ValueError(f"format {self.name!r}: suffix {suffix!r}: a '.' and a name other than gz")

    def defaults(self) -> dict[str, Any]:
        """Every option with its default (None where the fragment has none)."""
        return {key: fragment.get("default") for key, fragment in self.options.items()}

    def settings(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The options a reader gets: ``given`` (None values count as unset)
        over the defaults. ValueError names a key the format does not take."""
        given = given or {}
        foreign = sorted(set(given) - set(self.options))
        if foreign:
            takes = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"format {self.name!r} takes no option {', '.join(map(repr, foreign))} "
                             f"(its options: {takes})")
        return self.defaults() | {key: value for key, value in given.items() if value is not None}


class LimitedReader(io.RawIOBase):
    """A binary stream that raises ``too_large`` past ``limit`` bytes.

    Wraps the *decompressed* stream, so a small gzip bomb is refused before
    its expansion reaches memory or the database.
    """

    def __init__(self, raw: IO[bytes], limit: int | None) -> None:
        self._raw = raw
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        self.count += n
        if self._limit is not None and self.count > self._limit:
            raise PermanentError("too_large", f"the content (expanded, if gzipped) exceeds landing.max_file_bytes "
                                 f"({self._limit} bytes)", limit=self._limit)
        buffer[:n] = data
        return n


def open_content(path, limit: int | None) -> IO[bytes]:
    """The file's content as a buffered binary stream, un-gzipped by suffix."""
    raw: IO[bytes] = open(path, "rb")
    if str(path).endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    return io.BufferedReader(LimitedReader(raw, limit), buffer_size=TEXT_CHUNK)


def gzip_declared_size(path) -> int | None:
    """The uncompressed size a gzip file declares in its trailer (modulo 4 GiB)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def check_file_size(path, size: int, max_file_bytes: int | None, shown: str) -> None:
    """Refuse before reading: an empty file (``parse_error``: almost always a
    failed export, quarantined for a human rather than loaded as 0 rows) and
    a file, or a gzip file's declared content, over ``max_file_bytes``."""
    if size == 0:
        raise PermanentError("parse_error", "the file is empty (0 bytes)", path=shown)
    if max_file_bytes is not None and size > max_file_bytes:
        raise PermanentError("too_large", f"file of {size} bytes exceeds landing.max_file_bytes "
                             f"({max_file_bytes})", size=size, limit=max_file_bytes)
    if max_file_bytes is not None and str(path).endswith(".gz"):
        declared = gzip_declared_size(path)
        if declared is not None and declared > max_file_bytes:
            # The gzip trailer's own size: refused without expanding anything. (It
            # can lie; the streaming limit of the reader still holds then.)
            raise PermanentError("too_large", f"gzip content of {declared} bytes exceeds landing.max_file_bytes "
                                 f"({max_file_bytes})", size=declared, limit=max_file_bytes)


def wide_encoding(head: bytes) -> str | None:
    """The encoding the start of a file looks like when it is UTF-32 (with
    or without its byte order mark) or UTF-16 without one: text whose code
    units are mostly zero bytes, which UTF-8 text never holds. None else."""
    if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        return f"UTF-32{'LE' if head[0] else 'BE'} (it starts with a UTF-32 byte order mark)"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None  # UTF-16 with its mark: the reader decides
    units = len(head) // 4 * 4
    if units >= 4:
        for order, high, top in (("LE", 3, 2), ("BE", 0, 1)):
            # Every code point is below 0x110000: one byte of each unit is 0, the next at most 0x10.
            if not any(head[high:units:4]) and max(head[top:units:4]) <= 0x10:
                return f"UTF-32{order} without a byte order mark (every fourth byte is 0)"
    pairs = len(head) // 2
    even, odd = head[0:pairs * 2:2].count(0), head[1:pairs * 2:2].count(0)
    for order, zeros, others in (("LE", odd, even), ("BE", even, odd)):
        # ASCII in UTF-16 has a 0 in every other byte; stray NULs in UTF-8 do not line up.
        if zeros >= max(2, pairs // 8) and others <= zeros // 16:
            return f"UTF-16{order} without a byte order mark (every other byte is 0)"
    return None


WIDE_SAMPLE = 4096  # bytes looked at for UTF-16 and UTF-32


def refuse_wide(stream: IO[bytes], what: str) -> None:
    """Refuse (``encoding_error``) a stream whose start looks like UTF-32 or
    BOM-less UTF-16 (``wide_encoding``); ``what`` says what the format reads."""
    head = stream.peek(WIDE_SAMPLE)[:WIDE_SAMPLE] if hasattr(stream, "peek") else b""
    found = wide_encoding(head)
    if found:
        raise PermanentError("encoding_error", f"the file looks like {found}; {what}", encoding=found.split()[0])


def gzip_guard(exc: Exception) -> PermanentError:
    """The ``parse_error`` of a corrupt gzip stream (one of ``GZIP_ERRORS``)."""
    return PermanentError("parse_error", f"corrupt gzip stream: {exc}")


def check_byte_order_mark(stream: IO[bytes]) -> None:
    """Skip a UTF-8 byte order mark; refuse UTF-16 and UTF-32 (JSON is UTF-8)."""
    refuse_wide(stream, "JSON must be UTF-8")
    head = stream.peek(3)[:3] if hasattr(stream, "peek") else b""
    if head == b"\xef\xbb\xbf":
        stream.read(3)
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise PermanentError("encoding_error", "the file is UTF-16 (it starts with a UTF-16 byte order mark); "
                             "JSON must be UTF-8")
