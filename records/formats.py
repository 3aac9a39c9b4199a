"""The registry of file formats: what a landed file's name and a source's
``format`` key may say, and the one place a format is added.

A format is a ``Format``: its name (the ``format`` of a file source), the
file suffixes it claims (``format_of``, ``ingestd infer-schema``), the
source keys it takes (``options``: each a JSON Schema fragment whose
``default``, if any, is its value when unset) and its reader. The daemon's
config injects the names and the options into its schema at load, a file
source carries its format's options (``FileSource.options``), and
``read_records`` hands them to the reader: a format is added in its own
module and nowhere else::

    from ingestd.records.formats import Format, register

    def read_tsv(stream, options, max_record_bytes, exact_numbers):
        ...  # yields (record, text or None)

    register(Format("tsv", (".tsv",), read_tsv,
                    {"quote": {"type": "string", "maxLength": 1, "default": '"'}}))

``unregister(name)`` removes it again (tests keep the registry as they
found it).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from ingestd.daemon.errors import PermanentError

from . import readers
from .readers import MAX_RECORD_BYTES, TextRecord, open_content

__all__ = ["FORMATS", "Format", "Reader", "format_of", "read_records", "register", "unregister"]


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
    after a ``.gz`` is taken off (``format_of``). ``options`` maps each
    source key the format takes to its JSON Schema fragment; a fragment's
    ``default`` is the value when the key is unset (None without one).
    ``takes_path``: the reader is given the file's path, not its content
    stream (it seeks, as Parquet's footer needs; gzip and the content bound
    are then the reader's own)."""

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    takes_path: bool = False

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


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to ``FORMATS``. ValueError if its name is taken or not a
    plain lower-case name, a suffix is another format's (or ``.gz``, which
    any format may add), or an option is another format's key with another
    JSON Schema (one key of the config, one meaning)."""
    if not _NAME.match(fmt.name):
        raise ValueError(f"format name {fmt.name!r}: lower-case letters, digits and _, starting with a letter")
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    for suffix in fmt.suffixes:
        owner = next((f.name for f in FORMATS.values() if suffix in f.suffixes), None)
        if not suffix.startswith(".") or suffix == ".gz" or owner:
            why = f"it is format {owner!r}'s" if owner else "a suffix is '.' and a name other than gz"
            raise ValueError(f"format {fmt.name!r}: suffix {suffix!r} refused: {why}")
    for key, fragment in fmt.options.items():
        other = next((f for f in FORMATS.values() if f.options.get(key, fragment) != fragment), None)
        if other:
            raise ValueError(f"format {fmt.name!r}: option {key!r} is format {other.name!r}'s with another schema")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> Format:
    """Remove the format ``name`` from ``FORMATS`` (KeyError if absent); the format removed."""
    return FORMATS.pop(name)


def format_of(file_name: str) -> str | None:
    """The format whose suffix ends ``file_name`` (a ``.gz`` taken off
    first; the longest suffix wins), or None. Case counts: ``A.CSV`` is
    no CSV file."""
    base = file_name[:-3] if file_name.endswith(".gz") else file_name
    found = [(len(suffix), fmt.name) for fmt in FORMATS.values() for suffix in fmt.suffixes if base.endswith(suffix)]
    return max(found)[1] if found else None


def read_records(path: Any, fmt: str, limit: int | None, options: Mapping[str, Any] | None = None, *,
                 max_record_bytes: int = MAX_RECORD_BYTES, exact_numbers: bool = True) -> Iterator[TextRecord]:
    """Records of the file at ``path`` in format ``fmt`` (gzip by ``.gz``
    suffix); ``limit`` bounds the whole (expanded) content; ``options`` are
    the format's (``FileSource.options``; unset ones take their defaults,
    a key the format does not take is a ValueError). Values of JSON records
    have exact integers unless ``exact_numbers`` is False (nothing validates
    them); their text is exact either way.

    Whatever a reader raises ends here as a reason code: a file that cannot
    be read is ``unreadable_file``, anything else unforeseen a
    ``parse_error`` naming the record reached, never an error that has the
    event redelivered until the broker gives up on it."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    form = FORMATS[fmt]
    settings = form.settings(options)
    number = 0
    try:
        for number, record in enumerate(_records(path, form, limit, settings,  # noqa: B007 - read below
                                                 max_record_bytes, exact_numbers), 1):
            yield record
    except (PermanentError, MemoryError):
        raise  # a MemoryError is ours to see: memory is bounded by the limits
    except OSError as exc:
        raise PermanentError("unreadable_file", f"cannot read the file: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - one bad file must not loop through redeliveries
        raise PermanentError("parse_error", f"record {number + 1}: the {fmt} reader failed: "
                             f"{type(exc).__name__}: {exc}", record=number + 1) from None


def _records(path: Any, form: Format, limit: int | None, options: Mapping[str, Any], max_record_bytes: int,
             exact_numbers: bool) -> Iterator[TextRecord]:
    if form.takes_path:
        yield from form.read(path, options, max_record_bytes, exact_numbers)
        return
    content: IO[bytes]
    with open_content(path, limit) as content:
        yield from form.read(content, options, max_record_bytes, exact_numbers)


def _read_csv(content: IO[bytes], options: Mapping[str, Any], max_record_bytes: int,
              exact_numbers: bool) -> Iterator[TextRecord]:
    return readers.read_csv(content, options["delimiter"], options["skip_lines"], max_record_bytes)


def _read_json(content: IO[bytes], options: Mapping[str, Any], max_record_bytes: int,
               exact_numbers: bool) -> Iterator[TextRecord]:
    return readers.read_json(content, options["records_path"], max_record_bytes, exact_numbers)


def _read_jsonl(content: IO[bytes], options: Mapping[str, Any], max_record_bytes: int,
                exact_numbers: bool) -> Iterator[TextRecord]:
    return readers.read_jsonl(content, max_record_bytes, exact_numbers)


def _read_parquet(path: Any, options: Mapping[str, Any], max_record_bytes: int,
                  exact_numbers: bool) -> Iterator[TextRecord]:
    return readers.read_parquet(path, max_record_bytes, exact_numbers)


for _built_in in (
    Format("csv", (".csv",), _read_csv, {
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
        "skip_lines": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0},
    }),
    Format("json", (".json",), _read_json, {"records_path": {"type": "string"}}),
    Format("jsonl", (".jsonl", ".ndjson"), _read_jsonl),
    Format("parquet", (".parquet",), _read_parquet, takes_path=True),
):
    register(_built_in)
