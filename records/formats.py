"""The registry of file formats: what a landed file's name and a source's
``format`` key may say, and the one place a format is added.

A format is a ``Format`` (records/reading.py): its name (the ``format`` of a
file source), the file suffixes it claims (``format_of``; ``ingestd
infer-schema`` without ``--format``), the source keys it takes
(``options``: each a JSON Schema fragment, whose ``default`` is the value
when the key is unset) and its reader. The daemon's config injects the
names and the options into its schema at load and refuses a key of another
format; a file source carries its format's options, defaults filled in
(``FileSource.options``), and ``read_records`` hands them to the reader.
So a format is added in one place, and nothing else changes::

    from ingestd.records.formats import Format, register

    def read_tsv(content, options, max_record_bytes, exact_numbers):
        ...  # yields (record, None) from the binary stream ``content``

    register(Format("tsv", (".tsv",), read_tsv,
                    {"quote": {"type": "string", "maxLength": 1, "default": '"'}}))

``unregister("tsv")`` removes it again (a test leaves the registry as it
found it). The formats shipped each live in a module of their own,
``records/format_<name>.py``, which defines its reader and its ``FORMAT``,
registered below.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from ingestd.daemon.errors import PermanentError

from . import format_csv, format_json, format_jsonl, format_parquet
from .reading import MAX_RECORD_BYTES, Format, Reader, TextRecord, open_content

__all__ = ["FORMATS", "Format", "Reader", "format_of", "read_records", "register", "unregister"]

FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to ``FORMATS`` and return it. ValueError if its name is
    taken, a suffix is another format's, or an option is another format's
    key with another JSON Schema (one key of the config, one meaning)."""
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    _check_options(fmt)
    for suffix in fmt.suffixes:
        owner = next((f.name for f in FORMATS.values() if suffix in f.suffixes), None)
        if owner:
            raise ValueError(f"format {fmt.name!r}: suffix {suffix!r} is format {owner!r}'s")
    for key, fragment in fmt.options.items():
        other = next((f for f in FORMATS.values() if f.options.get(key, fragment) != fragment), None)
        if other:
            raise ValueError(f"format {fmt.name!r}: option {key!r} is format {other.name!r}'s with another schema")
    FORMATS[fmt.name] = fmt
    return fmt


def _check_options(fmt: Format) -> None:
    """ValueError unless every option of ``fmt`` is a key a config can hold
    (a plain lower-case name) with a valid JSON Schema fragment that its
    default, if any, satisfies: else every config would fail to load, or a
    source leaving the key unset would hand the reader what no file may say."""
    import jsonschema

    for key, fragment in fmt.options.items():
        if not isinstance(key, str) or not _OPTION.match(key):
            raise ValueError(f"format {fmt.name!r}: option {key!r}: lower-case letters, digits and _, "
                             "starting with a letter")
        try:
            jsonschema.Draft202012Validator.check_schema(dict(fragment))
        except jsonschema.SchemaError as exc:
            raise ValueError(f"format {fmt.name!r}: option {key!r}: not a JSON Schema: {exc.message}") from None
        if "default" in fragment:
            problem = next(jsonschema.Draft202012Validator(dict(fragment)).iter_errors(fragment["default"]), None)
            if problem is not None:
                raise ValueError(f"format {fmt.name!r}: option {key!r}: its default does not hold: "
                                 f"{problem.message}")


_OPTION = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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
                 max_record_bytes: int = MAX_RECORD_BYTES, exact_numbers: bool = True,
                 valid_rows: Callable[[Any], Any] | None = None) -> Iterator[TextRecord]:
    """Records of the file at ``path`` in format ``fmt`` (gzip by ``.gz``
    suffix); ``limit`` bounds the whole (expanded) content; ``options`` are
    the format's (``FileSource.options``; unset ones take their defaults,
    a key the format does not take is a ValueError). Values of JSON records
    have exact integers unless ``exact_numbers`` is False (nothing validates
    them); their text is exact either way. ``valid_rows`` (a validator's,
    consumers/validation.py) is handed to a format that ``takes_verdicts``:
    the records it finds valid come with the value ``KNOWN_VALID``.

    Whatever a reader raises ends here as a reason code: a file that cannot
    be read is ``unreadable_file``, anything else unforeseen a
    ``parse_error`` naming the record reached, never an error that has the
    event redelivered until the broker gives up on it."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(sorted(FORMATS))})")
    form = FORMATS[fmt]
    settings = form.settings(options)
    number = 0
    try:
        for number, record in enumerate(_records(path, form, limit, settings,  # noqa: B007 - read below
                                                 max_record_bytes, exact_numbers, valid_rows), 1):
            yield record
    except (PermanentError, MemoryError):
        raise  # a MemoryError is ours to see: memory is bounded by the limits
    except OSError as exc:
        raise PermanentError("unreadable_file", f"cannot read the file: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - one bad file must not loop through redeliveries
        raise PermanentError("parse_error", f"record {number + 1}: the {fmt} reader failed: "
                             f"{type(exc).__name__}: {exc}", record=number + 1) from None


def _records(path: Any, form: Format, limit: int | None, options: Mapping[str, Any], max_record_bytes: int,
             exact_numbers: bool, valid_rows: Callable[[Any], Any] | None) -> Iterator[TextRecord]:
    # Verdicts only where values are validated (a source with a schema).
    verdicts = {"valid_rows": valid_rows} if form.takes_verdicts and valid_rows is not None and exact_numbers else {}
    if form.takes_path:
        yield from form.read(path, options, max_record_bytes, exact_numbers, **verdicts)
        return
    content: IO[bytes]
    with open_content(path, limit) as content:
        yield from form.read(content, options, max_record_bytes, exact_numbers, **verdicts)


for _built_in in (format_csv.FORMAT, format_json.FORMAT, format_jsonl.FORMAT, format_parquet.FORMAT):
    register(_built_in)
