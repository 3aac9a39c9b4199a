"""Parquet repetition levels: where each row of a repeated column starts,
and how many values it holds, before pyarrow decodes anything.

Where a column repeats (lists, maps), a row is as many values as its
repetition levels say (a 0 starts a row), whatever the footer claims.
``row_count`` counts the rows of a column chunk's pages
(records/parquetpages.py); ``count_rows`` tells them in windows of
``WINDOW`` rows (the levels each spans, its two largest rows, the bytes of
strings its pages yield) and refuses a row whose JSON text cannot fit the
per-record limit, before anything is decoded. records/parquetplan.py sizes
the batches of heavy repeated columns from those windows.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

from ingestd.daemon.errors import PermanentError

from .jsonrecord import too_large_message
from .parquetpages import BIT_PACKED, INDICES, RLE, Chunk, Page, decompress, string_bytes

# Rows of a repeated column are counted in windows of this many (the
# largest batch read at a time).
WINDOW = 8192
# The old BIT_PACKED encoding packs levels most significant bit first: each byte reversed.
_REVERSED_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


@dataclass
class Window:
    """``WINDOW`` rows of a row group as one repeated column holds them."""
    first: int  # its first level
    levels: int = 0
    top: int = 0  # the most levels of one of its rows
    second: int = 0  # the next most
    strings: int = 0  # the bytes of strings its pages yield (counted when a ``sink`` takes windows)
    counted: int = -1  # the page whose strings were counted last (its payload offset)


# Takes each window once final, and how many alike it stands for.
Sink = Callable[[Window, int], None]


class _Rows:
    """The rows of a repeated column chunk, told by its repetition levels (a
    0 starts a row): per window of rows, the levels it spans and its two
    largest rows. Only the row group's ``rows`` count (pyarrow reads no
    more). A row whose JSON text cannot fit ``limit`` is too_large. With a
    ``sink``, each window goes to it once final and only the open one is
    kept (windows of one-level rows, alike, go as one): memory does not grow
    with the rows, whatever count the pages claim."""

    def __init__(self, rows: int, limit: int, first_record: int, path: str, sink: Sink | None = None) -> None:
        self.rows, self.limit, self.first_record, self.path = rows, limit, first_record, path
        self.windows: list[Window] = []
        self.sink = sink
        self.passed = 0  # windows given to the sink
        self.final: Callable[[Window, int], None] = lambda window, alike: None  # set by the reader of the pages
        self.row = -1  # the open row
        self.open = 0  # its levels so far
        self.inside = 0  # bytes of strings in pages that lie inside it
        self.open_level = -1  # where it starts

    @property
    def done(self) -> bool:
        return self.row >= self.rows

    def extend(self, levels: int) -> None:
        if self.row >= 0 and not self.done:
            self.open += levels
            self._check()

    def start(self, level: int, count: int = 1) -> None:
        """``count`` rows start, at ``level`` and the levels after it."""
        self._close()
        single = min(count - 1, self.rows - 1 - self.row)
        if single > 0:
            self._single_rows(level, single)
        self._open(level + count - 1)

    def add_inside(self, string_bytes: int) -> None:
        """Bytes of strings in a page that lies inside the open row: its
        JSON text holds at least as many."""
        self.inside += string_bytes
        if self.inside > self.limit and not self.done:
            self._refuse(f"more than {self.limit} bytes of strings")

    def finish(self) -> list[Window]:
        self._close()
        if self.sink is not None:
            self._pass()
        return self.windows

    def _pass(self, alike: Window | None = None, count: int = 0) -> None:
        """The open window to the sink, and ``count`` windows like ``alike`` after it."""
        assert self.sink is not None
        if self.windows:
            window = self.windows.pop()
            self.final(window, 1)
            self.sink(window, 1)
            self.passed += 1
        if alike is not None:
            self.final(alike, count)
            self.sink(alike, count)
            self.passed += count

    def _window(self, row: int, level: int) -> Window:
        index = row // WINDOW - self.passed
        if index == len(self.windows):
            if self.sink is not None and self.windows:
                self._pass()
                index -= 1
            self.windows.append(Window(level))
        return self.windows[index]

    def _open(self, level: int) -> None:
        self.row += 1
        self.open = self.inside = 0
        self.open_level = level
        if not self.done:
            self._window(self.row, level)
            self.open = 1

    def _single_rows(self, level: int, count: int) -> None:
        """``count`` rows of one level each, from the row after the open one."""
        row = self.row + 1
        while count > 0:
            if self.sink is not None and row % WINDOW == 0 and count >= WINDOW:
                alike = count // WINDOW  # whole windows of one-level rows
                self._pass(Window(level, WINDOW, 1, int(WINDOW > 1)), alike)
                row, level, count = row + alike * WINDOW, level + alike * WINDOW, count - alike * WINDOW
                continue
            window = self._window(row, level)
            room = min(count, WINDOW - row % WINDOW)
            window.levels += room
            window.top, window.second = sorted((window.top, window.second, 1, int(room > 1)), reverse=True)[:2]
            row, level, count = row + room, level + room, count - room
        self.row = row - 1

    def _check(self) -> None:
        # Each value takes at least a character and a comma in its row's JSON.
        if self.open > (self.limit + 1) // 2:
            self._refuse(f"more than {(self.limit + 1) // 2} values")

    def _close(self) -> None:
        if self.row < 0 or self.done or not self.open:
            return
        window = self.windows[-1]
        window.levels += self.open
        if self.open > window.top:
            window.top, window.second = self.open, window.top
        elif self.open > window.second:
            window.second = self.open
        self.open = 0

    def _refuse(self, what: str) -> None:
        record = self.first_record + self.row
        raise PermanentError("too_large", too_large_message(f"record {record}", self.limit)
                             + f" (its column {self.path} holds {what})", record=record)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("repetition levels cut short")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a run header longer than 64 bits")


def _arrow_nonzero(data: bytes, count: int, width: int) -> pa.Array:
    """Whether each of ``count`` bit-packed levels (least significant bit
    first) is not 0, with Arrow's kernels (its booleans have the same bit order)."""
    bits = pa.Array.from_buffers(pa.bool_(), count * width, [None, pa.py_buffer(data)])
    if width == 1:
        return bits
    groups = pa.FixedSizeListArray.from_arrays(bits, width)
    nonzero = pc.list_element(groups, 0)
    for bit in range(1, width):
        nonzero = pc.or_(nonzero, pc.list_element(groups, bit))
    return nonzero


def _arrow_zeros(data: bytes, count: int, width: int) -> list[int]:
    """Where ``count`` bit-packed levels are 0."""
    return pc.indices_nonzero(pc.invert(_arrow_nonzero(data, count, width))).to_pylist()


def _count_zeros(data: bytes, levels: int, width: int, hybrid: bool) -> int:
    """How many of ``levels`` repetition levels are 0 (rows that start)."""
    if not hybrid:
        if len(data) * 8 < levels * width:
            raise ValueError("bit-packed repetition levels cut short")
        return levels - (pc.sum(_arrow_nonzero(data, levels, width)).as_py() or 0)
    pos = done = zeros = 0
    value_bytes = (width + 7) // 8
    while done < levels:
        header, pos = _varint(data, pos)
        if header & 1:
            size = (header >> 1) * width
            count = min((header >> 1) * 8, levels - done)
            if len(data) - pos < size or count * width > size * 8:
                raise ValueError("bit-packed repetition levels cut short")
            if count:
                zeros += count - (pc.sum(_arrow_nonzero(data[pos:pos + size], count, width)).as_py() or 0)
            pos += size
        else:
            count = min(header >> 1, levels - done)
            if count <= 0:
                raise ValueError("an empty run of repetition levels")
            if pos + value_bytes > len(data):
                raise ValueError("repetition levels cut short")
            zeros += 0 if any(data[pos:pos + value_bytes]) else count
            pos += value_bytes
        done += count
    return zeros


def row_count(fh: IO[bytes], chunk: Chunk, pages: Iterable[Page] | None = None) -> int:
    """The rows a repeated column chunk's pages (``pages``, or those it
    holds) hold: its repetition levels that are 0 (each starts a row)."""
    width = chunk.max_rep.bit_length()
    rows = 0
    for page in chunk.pages if pages is None else pages:
        data, hybrid = _repetition_levels(fh, chunk, page)
        rows += _count_zeros(data, page.levels, width, hybrid)
    return rows


# For levels of 1, 2, 4 or 8 bits: the positions in a byte of those that are 0.
_ZERO_TABLES = {width: [tuple(i for i in range(8 // width) if not (byte >> (i * width)) & ((1 << width) - 1))
                        for byte in range(256)] for width in (1, 2, 4, 8)}
_SMALL = 4096  # bit-packed levels looked up byte by byte; more go to Arrow
_SLICE = 1 << 16  # bit-packed levels given to Arrow at a time (a multiple of 8)


class _Starts:
    """Row starts (levels that are 0) into a ``_Rows``: the levels between
    two starts belong to the row the first one opened."""

    def __init__(self, rows: _Rows) -> None:
        self.rows = rows
        self.last = 0

    def zero(self, level: int, count: int = 1) -> None:
        self.rows.extend(level - self.last)
        self.rows.start(level, count)
        self.last = level + count

    def end(self, level: int) -> None:
        self.rows.extend(level - self.last)
        self.last = level


def _feed_packed(data: bytes, count: int, width: int, base: int, starts: _Starts) -> None:
    if len(data) * 8 < count * width:
        raise ValueError("bit-packed repetition levels cut short")
    table = _ZERO_TABLES.get(width)
    if table is not None and count <= _SMALL:
        per_byte = 8 // width
        for index in range((count * width + 7) // 8):
            for offset in table[data[index]]:
                if index * per_byte + offset >= count:
                    return
                starts.zero(base + index * per_byte + offset)
        return
    for first in range(0, count, _SLICE):
        size = min(_SLICE, count - first)
        piece = data[first * width // 8:(first + size) * width // 8 + 1]
        for zero in _arrow_zeros(piece, size, width):
            starts.zero(base + first + zero)
        if starts.rows.done:
            return


def _feed_hybrid(data: bytes, levels: int, width: int, base: int, starts: _Starts) -> None:
    """Repetition levels in Parquet's RLE / bit-packing hybrid."""
    pos = done = 0
    value_bytes = (width + 7) // 8
    while done < levels and not starts.rows.done:
        header, pos = _varint(data, pos)
        if header & 1:
            size = (header >> 1) * width
            count = min((header >> 1) * 8, levels - done)
            _feed_packed(data[pos:pos + size], count, width, base + done, starts)
            pos += size
        else:
            count = min(header >> 1, levels - done)
            if count <= 0:
                raise ValueError("an empty run of repetition levels")
            if not any(data[pos:pos + value_bytes]):
                starts.zero(base + done, count)
            pos += value_bytes
        done += count



def _repetition_levels(fh: IO[bytes], chunk: Chunk, page: Page) -> tuple[bytes, bool]:
    """A page's repetition level bytes, and whether they are the RLE hybrid
    (else the old BIT_PACKED encoding, turned into least significant bit first)."""
    if page.version2:
        fh.seek(page.payload)  # version 2 keeps its levels uncompressed, first
        return fh.read(page.repetition_bytes), True
    fh.seek(page.payload)
    data = decompress(fh.read(page.compressed), chunk.codec, page.size)
    encoding = page.repetition_encoding
    if encoding == RLE:
        length = int.from_bytes(data[:4], "little")
        return data[4:4 + length], True
    if encoding == BIT_PACKED:
        width = chunk.max_rep.bit_length()
        return data[:(page.levels * width + 7) // 8].translate(_REVERSED_BITS), False
    raise ValueError(f"repetition levels in encoding {encoding}")


def count_rows(fh: IO[bytes], chunk: Chunk, rows: int, limit: int, first_record: int,
               pages: Iterable[Page] | None = None, sink: Sink | None = None) -> list[Window]:
    """Windows of the rows of a repeated column chunk (its ``pages``, or
    those it holds); too_large for a row whose JSON text cannot fit
    ``limit``, before anything is decoded. With a ``sink``, each window goes
    to it once final, with the bytes of strings of the pages it spans, and
    none is kept."""
    counter = _Rows(rows, limit, first_record, chunk.path, sink)
    starts = _Starts(counter)
    width = chunk.max_rep.bit_length()
    page = Page(0, 0, 0, -1, 0, 0)

    def count_strings(window: Window, alike: int = 1) -> None:
        """Add the strings of ``page`` the window (of the open row's levels so far) spans."""
        if window.counted == page.payload:
            return
        is_open = bool(counter.windows) and window is counter.windows[-1] and not counter.done
        end = window.first + window.levels + (counter.open if is_open else 0)
        overlap = min(end, page.first + page.levels) - max(window.first, page.first)
        if overlap > 0:
            window.strings += string_bytes(chunk, page, overlap)
        window.counted = page.payload

    counter.final = count_strings
    for page in chunk.pages if pages is None else pages:
        before = counter.row
        data, hybrid = _repetition_levels(fh, chunk, page)
        if hybrid:
            _feed_hybrid(data, page.levels, width, page.first, starts)
        else:
            _feed_packed(data, page.levels, width, page.first, starts)
        starts.end(page.first + page.levels)
        inside = counter.row == before or (counter.row == before + 1 and counter.open_level == page.first)
        if inside and page.encoding not in INDICES and string_bytes(chunk, page):
            # Each value costs at most 10 bytes besides its string (length, levels).
            counter.add_inside(max(0, page.size - 10 * page.levels))
        if sink is not None and counter.windows:
            count_strings(counter.windows[-1])
        if counter.done:
            break
    return counter.finish()
