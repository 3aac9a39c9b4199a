"""How many rows of a Parquet file pyarrow may decode at a time.

Memory while a Parquet file is read is what pyarrow holds for the row
group (a decompressed page and the decoded dictionary of every column),
plus a batch of rows decoded and encoded as JSON. The first is bounded by
refusing a row group that needs more than ``16 x max_record_bytes`` of
pages at once; the second by choosing, per row group, the batch size whose
batches stay within ``BATCH_BUDGET``, from what the page headers and the
repetition levels say (consumers/parquetpages.py), whatever the footer
claims. A row whose JSON cannot fit ``max_record_bytes`` is refused before
it is decoded.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import IO, Any

from ingestd.daemon.errors import PermanentError

from .jsontext import too_large_message
from .parquetpages import (
    WINDOW,
    Chunk,
    Footer,
    Window,
    count_rows,
    longest_entry,
    old_parquet_mr,
    read_chunk,
    row_count,
    string_bytes,
)

DEFAULT_BATCH_ROWS = WINDOW
# What a batch of rows may cost while pyarrow decodes it and its JSON is
# built (estimated below): 64 MiB.
BATCH_BUDGET = 64 << 20
# Estimated bytes a value costs while decoded and encoded (its levels, the
# Arrow value, its text and the kernels' copies; measured about 30 for
# small integers). Strings and binary cost their bytes when decoded; their
# text (escapes, base64, copies: about BYTE_COST a byte) is built only for
# as many as BATCH_BUDGET allows (readers.PARQUET_EXPANSION), checked then.
VALUE_COST = 48
BYTE_COST = 8
# pyarrow's read buffer per column (without it, each column chunk is read whole).
READ_BUFFER = 64 << 10


def _value_cost(chunk: Chunk) -> int:
    return VALUE_COST + (chunk.width if chunk.physical == "FIXED_LEN_BYTE_ARRAY" else 0)


def _range_cost(chunk: Chunk, firsts: list[int], first: int, end: int) -> int:
    """What decoding and encoding the levels [first, end) of a chunk may cost."""
    cost = (end - first) * _value_cost(chunk)
    if chunk.physical != "BYTE_ARRAY" or end <= first:
        return cost
    for index in range(max(0, bisect_right(firsts, first) - 1), bisect_left(firsts, end)):
        page = chunk.pages[index]
        overlap = min(end, page.first + page.levels) - max(first, page.first)
        if overlap > 0:
            cost += string_bytes(chunk, page, overlap)
    return cost


class _Column:
    """The most one batch of ``rows`` rows of a column chunk may cost."""

    def __init__(self, chunk: Chunk, rows: int, windows: list[Window] | None) -> None:
        self.chunk, self.rows, self.windows = chunk, rows, windows
        self.firsts = [page.first for page in chunk.pages]
        self.total = _range_cost(chunk, self.firsts, 0, chunk.levels)

    def most(self, rows: int) -> int:
        if self.chunk.max_rep == 0:  # one level a row
            end = min(self.rows, self.chunk.levels)
            if self.chunk.physical != "BYTE_ARRAY":
                return min(rows, end) * _value_cost(self.chunk)
            return max((_range_cost(self.chunk, self.firsts, first, min(first + rows, end))
                        for first in range(0, end, rows)), default=0)
        if self.windows is None:  # repeated, but too light to matter: all of it
            return self.total
        cost = _value_cost(self.chunk)
        return max((min(w.levels, w.top + (rows - 1) * w.second) * cost
                    + _range_cost(self.chunk, self.firsts, w.first, w.first + w.levels) - w.levels * cost
                    for w in self.windows), default=0)


def batch_rows(fh: IO[bytes], chunks: list[Chunk], rows: int, limit: int, first_record: int, names: int = 0) -> int:
    """How many rows of a row group pyarrow may decode at a time: the most
    (up to ``DEFAULT_BATCH_ROWS``, halving) whose batches stay within
    ``BATCH_BUDGET``, or 1 (a row alone, its size checked as it is encoded).
    ``names``: the bytes of column (and struct field) names each row's text holds."""
    per_row = names * BYTE_COST
    if sum(_range_cost(c, [p.first for p in c.pages], 0, c.levels) for c in chunks) + rows * per_row \
            <= BATCH_BUDGET:
        return DEFAULT_BATCH_ROWS
    columns = []
    for chunk in chunks:
        if chunk.physical == "BYTE_ARRAY" and chunk.dictionary and not chunk.as_dictionary:
            chunk.entry = longest_entry(fh, chunk)  # expanded by pyarrow: how long an entry can be
        column = _Column(chunk, rows, None)
        if chunk.max_rep and column.total > BATCH_BUDGET // 16:
            column.windows = count_rows(fh, chunk, rows, limit, first_record)
        columns.append(column)
    size = DEFAULT_BATCH_ROWS
    while size > 1 and sum(column.most(size) for column in columns) + size * per_row > BATCH_BUDGET:
        size //= 2
    return size


@dataclass
class Plan:
    """How to read a Parquet file within bounded memory."""
    batches: list[tuple[int, int]]  # (row group, rows a batch)
    dictionaries: list[str]  # string columns read as dictionary arrays (pyarrow does not expand them)


def plan(path: Any, footer: Footer, limit: int, readable: set[str] | None = None,
         names: tuple[int, int] = (0, 0)) -> Plan:
    """The batches of every row group, from the page headers (and, for
    heavy repeated columns, the repetition levels) of the file at ``path``.
    ``readable``: the string columns pyarrow reads as dictionary arrays when
    asked (all by default; it expands the others, e.g. JSON's, whatever it
    is asked). ``names``: the bytes of JSON text the names of the columns
    give every row (the least), and with those of the fields of its structs.

    too_large: a page over ``8 x limit`` bytes decompressed, a row group
    whose pages held at once (one per column, and its dictionary) exceed
    ``16 x limit``, a row whose JSON cannot fit ``limit``. ``ValueError``
    for headers that cannot be read."""
    if names[0] > limit and any(rows for rows, _ in footer.groups):
        raise PermanentError("too_large", too_large_message("record 1", limit)
                             + f" (the names of its columns alone take {names[0]} bytes)", record=1)
    padded = old_parquet_mr(footer.created_by)
    with open(path, "rb") as fh:
        file_size = fh.seek(0, 2)
        groups = []
        for index, (rows, metas) in enumerate(footer.groups):
            chunks = [read_chunk(fh, meta, leaf, file_size, padded, 8 * limit)
                      for meta, leaf in zip(metas, footer.leaves, strict=True)]
            _check_held(chunks, index, 16 * limit)
            _check_rows(fh, chunks, index, rows)
            groups.append((chunks, rows))
        # A string column whose every chunk holds dictionary indices only is read
        # as indices (pyarrow builds a dictionary of any other page: memory).
        dictionaries = {c.path for chunks, _ in groups for c in chunks if c.physical == "BYTE_ARRAY"}
        dictionaries -= {c.path for chunks, _ in groups for c in chunks if not c.indices_only}
        if readable is not None:
            dictionaries &= readable
        batches, first_record = [], 1
        for index, (chunks, rows) in enumerate(groups):
            for chunk in chunks:
                chunk.as_dictionary = chunk.path in dictionaries
            batches.append((index, batch_rows(fh, chunks, rows, limit, first_record, names[1])))
            first_record += rows
    return Plan(batches, sorted(dictionaries))


def _check_held(chunks: list[Chunk], index: int, cap: int) -> None:
    # pyarrow keeps, per column, its largest page decompressed, its dictionary
    # decoded (a string's bytes and its offsets, about three times the page)
    # and a read buffer.
    held = sum(c.largest + c.dictionary_bytes * (3 if c.physical == "BYTE_ARRAY" else 1) + READ_BUFFER
               for c in chunks)
    if held > cap:
        raise PermanentError("too_large", f"row group {index + 1} needs {held} bytes of Parquet pages decompressed "
                             f"at once ({len(chunks)} columns), over {cap} (16 x landing.max_record_bytes)",
                             limit=cap)


def _check_rows(fh: IO[bytes], chunks: list[Chunk], index: int, rows: int) -> None:
    # pyarrow reads as many rows as the footer says a row group has: fewer
    # than its pages hold lose the rest, silently. A column that does not
    # repeat holds one level a row in its pages; one that repeats (lists,
    # maps), a level 0 a row in its repetition levels, counted where no
    # column of the row group is one of the first kind.
    flat = [chunk for chunk in chunks if chunk.max_rep == 0]
    for chunk in flat or chunks[:1]:
        held = chunk.levels if chunk.max_rep == 0 else row_count(fh, chunk)
        if held != rows:
            raise ValueError(f"row group {index + 1}: the footer says {rows} rows, the pages of column {chunk.path} "
                             f"hold {held}")
