"""How many rows of a Parquet file pyarrow may decode at a time.

Memory while a Parquet file is read is what pyarrow holds for the row
group (a decompressed page and the decoded dictionary of every column),
plus a batch of rows decoded and encoded as JSON. The first is bounded by
refusing a row group that needs more than ``16 x max_record_bytes`` of
pages at once; the second by choosing, per row group, the batch size whose
batches stay within ``BATCH_BUDGET``, from what the page headers
(records/parquetpages.py) and the repetition levels
(records/parquetlevels.py) say, whatever the footer claims. A row whose
JSON cannot fit ``max_record_bytes`` is refused before it is decoded.

The plan walks the page headers as a stream, a row group at a time, and
keeps of them what sums up a column chunk, never a page each: its memory
does not grow with the number of pages (nor of rows), and what it keeps
per row group is a byte and the group's batch size.
"""
from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ingestd.daemon.errors import PermanentError

from .jsonrecord import too_large_message
from .parquetfooter import Footer
from .parquetlevels import WINDOW, Window, count_rows, row_count
from .parquetpages import Chunk, Page, iter_pages, longest_entry, new_chunk, old_parquet_mr, string_bytes

DEFAULT_BATCH_ROWS = WINDOW
# The batch sizes tried, halving: 8,192 rows to 1.
SIZES = tuple(DEFAULT_BATCH_ROWS >> i for i in range(DEFAULT_BATCH_ROWS.bit_length()))
# What a batch of rows may cost while pyarrow decodes it and its JSON is
# built (estimated below): 64 MiB.
BATCH_BUDGET = 64 << 20
# Estimated bytes a value costs while decoded and encoded (its levels, the
# Arrow value, its text and the kernels' copies). Measured (peak RSS of a
# reading process over what the plan estimated, docs/operations.md): 60 for
# lists of small integers, 80 for lists of int64 or of nulls, 115 to 120
# for maps and lists of structs, 160 for short binary values (base64 goes
# through Python); this is the most of them. Strings and binary cost their
# bytes when decoded besides; their text (escapes, base64, copies: about
# BYTE_COST a byte) is built only for as many as BATCH_BUDGET allows
# (readers.PARQUET_EXPANSION), checked then.
VALUE_COST = 160
BYTE_COST = 8
# What pyarrow holds of a dictionary while it reads its row group, per entry
# and per byte of the decompressed page (measured, 1 M entries: 3.3 bytes a
# byte for integers; 55 bytes an entry of 8 characters for strings it
# expands; 171 for strings read as dictionary arrays, each batch with its
# copy of the dictionary).
DICTIONARY_COST = (0, 4)
STRING_DICTIONARY_COST = (32, 4)
KEPT_DICTIONARY_COST = (128, 4)
# pyarrow's read buffer per column (without it, each column chunk is read whole).
READ_BUFFER = 64 << 10
# What pyarrow keeps per page of a row group until the group is read
# (measured: 200 bytes a page of one small integer with its statistics,
# 73 without; a row group of 2 M such pages took 460 MB).
PAGE_COST = 256
# What pyarrow keeps per level of a repeated column (lists, maps) until its
# row group is read, whatever the batch (its repetition and definition
# levels, two bytes each: measured 3.2 bytes a level for 20 M levels, 2.5
# for 80 M, with the batches of 64 rows).
LEVEL_COST = 4
# What pyarrow keeps per byte of the small pages of a string column
# (parquetpages.SMALL_PAGE) until their row group is read (measured: 2.9
# for pages of 1 KB or 12 KB of 8-character strings, 1.1 for pages of 10 KB
# of 1,000-character ones).
SMALL_PAGE_COST = 4

Pages = Callable[[Chunk], Iterator[Page]]
# The column chunks of a row group (by its index), summed, and how to walk their pages again.
Walk = Callable[[int], tuple[list[Chunk], Pages]]


def _value_cost(chunk: Chunk) -> int:
    return VALUE_COST + (chunk.width if chunk.physical == "FIXED_LEN_BYTE_ARRAY" else 0)


def _total(chunk: Chunk) -> int:
    """What decoding and encoding all of a column chunk may cost."""
    return chunk.levels * _value_cost(chunk) + chunk.strings()


def _flat_strings(chunk: Chunk, pages: Iterator[Page], end: int) -> list[int]:
    """Per batch size of ``SIZES``, the most bytes of strings one batch of a
    column that does not repeat (a level a row) yields, rows [0, end) read."""
    most, batch, held = [0] * len(SIZES), [-1] * len(SIZES), [0] * len(SIZES)
    for page in pages:
        low, high = page.first, min(page.first + page.levels, end)
        if high <= low:
            if low >= end:
                break
            continue
        for i, size in enumerate(SIZES):
            first, last = low // size, (high - 1) // size
            if first != batch[i]:
                most[i], batch[i], held[i] = max(most[i], held[i]), first, 0
            if first == last:
                held[i] += string_bytes(chunk, page, high - low)
                continue
            most[i] = max(most[i], held[i] + string_bytes(chunk, page, (first + 1) * size - low))
            if last - first > 1:  # batches inside the page
                most[i] = max(most[i], string_bytes(chunk, page, size))
            batch[i], held[i] = last, string_bytes(chunk, page, high - last * size)
    return [max(m, h) for m, h in zip(most, held, strict=True)]


def _column_costs(fh: IO[bytes], chunk: Chunk, rows: int, limit: int, first_record: int,
                  pages: Pages) -> list[int]:
    """Per batch size of ``SIZES``, the most one batch of a column chunk may cost."""
    cost = _value_cost(chunk)
    if chunk.max_rep == 0:  # one level a row
        end = min(rows, chunk.levels)
        values = [min(size, end) * cost for size in SIZES]
        if chunk.physical != "BYTE_ARRAY":
            return values
        return [v + s for v, s in zip(values, _flat_strings(chunk, pages(chunk), end), strict=True)]
    total = _total(chunk)
    if total <= BATCH_BUDGET // 16:  # repeated, but too light to matter: all of it
        return [total] * len(SIZES)
    most = [0] * len(SIZES)

    def window(w: Window, alike: int) -> None:
        for i, size in enumerate(SIZES):
            most[i] = max(most[i], min(w.levels, w.top + (size - 1) * w.second) * cost + w.strings)

    count_rows(fh, chunk, rows, limit, first_record, pages(chunk), window)
    return most


def batch_rows(fh: IO[bytes], chunks: list[Chunk], rows: int, limit: int, first_record: int, names: int,
               pages: Pages) -> int:
    """How many rows of a row group pyarrow may decode at a time: the most
    (up to ``DEFAULT_BATCH_ROWS``, halving) whose batches stay within
    ``BATCH_BUDGET``, or 1 (a row alone, its size checked as it is encoded).
    ``chunks``: the group's column chunks, summed (``iter_pages``), which
    ``pages`` walks again where one batch's share must be told.
    ``names``: the bytes of column (and struct field) names each row's text holds."""
    per_row = names * BYTE_COST
    if sum(_total(c) for c in chunks) + rows * per_row <= BATCH_BUDGET:
        return DEFAULT_BATCH_ROWS
    costs = [0] * len(SIZES)
    for chunk in chunks:
        if chunk.physical == "BYTE_ARRAY" and chunk.dictionary and not chunk.as_dictionary:
            chunk.entry = longest_entry(fh, chunk)  # expanded by pyarrow: how long an entry can be
        for i, cost in enumerate(_column_costs(fh, chunk, rows, limit, first_record, pages)):
            costs[i] += cost
    for i, size in enumerate(SIZES):
        if costs[i] + size * per_row <= BATCH_BUDGET:
            return size
    return 1


@dataclass
class Plan:
    """How to read a Parquet file within bounded memory."""
    sizes: array[int]  # per row group, the rows of a batch
    dictionaries: list[str]  # string columns read as dictionary arrays (pyarrow does not expand them)

    @property
    def batches(self) -> Iterator[tuple[int, int]]:
        """(row group, rows a batch), in order."""
        return iter(enumerate(self.sizes))


def plan(path: Any, footer: Footer, limit: int, readable: set[str] | None = None,
         names: tuple[int, int] = (0, 0)) -> Plan:
    """The batches of every row group, from the page headers (and, for
    heavy repeated columns, the repetition levels) of the file at ``path``.
    ``readable``: the string columns pyarrow reads as dictionary arrays when
    asked (all by default; it expands the others, e.g. JSON's, whatever it
    is asked). ``names``: the bytes of JSON text the names of the columns
    give every row (the least), and with those of the fields of its structs.

    The page headers are walked a row group at a time, twice where a
    group's batches must be told (the string columns read as dictionaries
    are known only once every group's pages are): what is kept of a group
    between is whether it is light (all of it one batch, whatever is read
    as dictionaries).

    too_large: a page over ``8 x limit`` bytes, decompressed or compressed,
    a row group whose pages held at once (one per column, and its
    dictionary) exceed ``16 x limit``, a row whose JSON cannot fit
    ``limit``. ``ValueError`` for headers that cannot be read."""
    if names[0] > limit and any(rows for rows, _ in footer.groups):
        raise PermanentError("too_large", too_large_message("record 1", limit)
                             + f" (the names of its columns alone take {names[0]} bytes)", record=1)
    padded = old_parquet_mr(footer.created_by)
    strings = {leaf.path for leaf in footer.leaves if leaf.physical_type == "BYTE_ARRAY"}
    candidates = strings if readable is None else strings & readable
    with open(path, "rb") as fh:
        walk = _walker(fh, footer, padded, 8 * limit)
        not_indices, heavy = _first_walk(fh, footer, walk, strings, candidates, limit, names[1])
        # A string column whose every chunk holds dictionary indices only is read
        # as indices (pyarrow builds a dictionary of any other page: memory).
        dictionaries = candidates - not_indices
        sizes = _batch_sizes(fh, footer, walk, heavy, dictionaries, limit, names[1])
    return Plan(sizes, sorted(dictionaries))


def _walker(fh: IO[bytes], footer: Footer, padded: bool, page_cap: int) -> Walk:
    """How to walk the page headers of a row group of ``footer``, ``fh`` its file."""
    file_size = fh.seek(0, 2)

    def walk(index: int) -> tuple[list[Chunk], Pages]:
        """The column chunks of row group ``index``, summed, and how to walk their pages again."""
        metas = footer.groups[index][1]
        chunks = [new_chunk(meta, leaf) for meta, leaf in zip(metas, footer.leaves, strict=True)]
        by_chunk = {id(chunk): meta for chunk, meta in zip(chunks, metas, strict=True)}

        def pages(chunk: Chunk) -> Iterator[Page]:
            return iter_pages(fh, chunk, by_chunk[id(chunk)], file_size, padded, page_cap)
        return chunks, pages
    return walk


def _first_walk(fh: IO[bytes], footer: Footer, walk: Walk, strings: set[str], candidates: set[str], limit: int,
                names: int) -> tuple[set[str], bytearray]:
    """The first walk of the page headers: the checks, which string columns
    are not dictionary indices throughout, and, per row group, whether it
    is heavy (not all one batch) whatever is read as dictionaries."""
    not_indices: set[str] = set()
    heavy = bytearray()
    flat = any(leaf.max_repetition_level == 0 for leaf in footer.leaves)
    for index, (rows, _) in enumerate(footer.groups):
        chunks, pages = walk(index)
        counted = None
        before = 0  # what the chunks before hold (their dictionaries at the least)
        for number, chunk in enumerate(chunks):
            walked = _checked_pages(pages(chunk), chunks[:number + 1], before, index, 16 * limit)
            if not flat and number == 0:
                counted = row_count(fh, chunk, walked)
            else:
                for _ in walked:
                    pass
            before += _held(chunk)
            if chunk.path in strings and not chunk.indices_only:
                not_indices.add(chunk.path)
        for chunk in chunks:  # the most pyarrow may hold: as dictionaries where it may be asked to
            chunk.as_dictionary = chunk.path in candidates and chunk.indices_only
        _check_held(chunks, index, 16 * limit)
        _check_rows(chunks, index, rows, counted)
        for chunk in chunks:
            chunk.as_dictionary = False
        heavy.append(sum(_total(c) for c in chunks) + rows * names * BYTE_COST > BATCH_BUDGET)
    return not_indices, heavy


def _batch_sizes(fh: IO[bytes], footer: Footer, walk: Walk, heavy: bytearray, dictionaries: set[str], limit: int,
                 names: int) -> array[int]:
    """Per row group, the rows of a batch: ``DEFAULT_BATCH_ROWS`` where it is
    light, else what ``batch_rows`` finds, its page headers walked again
    with the columns read as ``dictionaries``."""
    sizes, first_record = array("l"), 1
    for index, (rows, _) in enumerate(footer.groups):
        size = DEFAULT_BATCH_ROWS
        if heavy[index]:
            chunks, pages = walk(index)
            for chunk in chunks:
                chunk.as_dictionary = chunk.path in dictionaries
                for _ in pages(chunk):
                    pass
            size = batch_rows(fh, chunks, rows, limit, first_record, names, pages)
        sizes.append(size)
        first_record += rows
    return sizes


def _held(chunk: Chunk) -> int:
    # pyarrow keeps, per column, its largest page decompressed, its dictionary
    # decoded (DICTIONARY_COST and the like), a read buffer, some bytes a page,
    # where the column repeats some a level, and small pages of strings.
    return chunk.largest + _dictionary_held(chunk) + READ_BUFFER + chunk.data_pages * PAGE_COST \
        + (chunk.levels * LEVEL_COST if chunk.max_rep else 0) + chunk.small_pages * SMALL_PAGE_COST


def _check_held(chunks: list[Chunk], index: int, cap: int) -> None:
    held = sum(_held(c) for c in chunks)
    if held > cap:
        _refuse_held(chunks, index, held, cap)


def _refuse_held(chunks: list[Chunk], index: int, held: int, cap: int) -> None:
    pages = sum(c.data_pages for c in chunks)
    columns = f"{len(chunks)} column{'s' if len(chunks) != 1 else ''}"
    if pages * PAGE_COST > cap // 4:
        raise PermanentError("too_large", f"row group {index + 1} holds {pages} pages or more ({columns}), and pyarrow "
                             f"keeps about {PAGE_COST} bytes a page while it reads a row group: it needs {held} bytes "
                             f"or more at once, over {cap} (16 x landing.max_record_bytes: fewer than "
                             f"{cap // PAGE_COST} pages a row group)", limit=cap)
    raise PermanentError("too_large", f"row group {index + 1} needs {held} bytes of Parquet pages decompressed at once "
                         f"({columns}), over {cap} (16 x landing.max_record_bytes)", limit=cap)


def _checked_pages(pages: Iterator[Page], chunks: list[Chunk], before: int, index: int, cap: int) -> Iterator[Page]:
    """The pages of the last of ``chunks`` (``before``: what the others
    hold), refused as soon as what they hold passes ``cap``
    (``_check_held``): a row group of millions of pages ends early."""
    chunk = chunks[-1]
    for page in pages:
        if before + _held(chunk) > cap:
            _refuse_held(chunks, index, before + _held(chunk), cap)
        yield page


def _dictionary_held(chunk: Chunk) -> int:
    if chunk.dictionary is None:
        return 0
    if chunk.physical != "BYTE_ARRAY":
        per_entry, per_byte = DICTIONARY_COST
    else:
        per_entry, per_byte = KEPT_DICTIONARY_COST if chunk.as_dictionary else STRING_DICTIONARY_COST
    return chunk.dictionary.levels * per_entry + chunk.dictionary.size * per_byte


def _check_rows(chunks: list[Chunk], index: int, rows: int, counted: int | None) -> None:
    # pyarrow reads as many rows as the footer says a row group has: fewer
    # than its pages hold lose the rest, silently. A column that does not
    # repeat holds one level a row in its pages; one that repeats (lists,
    # maps), a level 0 a row in its repetition levels (``counted``, of the
    # first column, where no column of the row group is one of the first kind).
    flat = [chunk for chunk in chunks if chunk.max_rep == 0]
    for chunk in flat or chunks[:1]:
        held = chunk.levels if chunk.max_rep == 0 else counted
        if held != rows:
            raise ValueError(f"row group {index + 1}: the footer says {rows} rows, the pages of column {chunk.path} "
                             f"hold {held}")
