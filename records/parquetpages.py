"""Parquet page headers and repetition levels, read before pyarrow decodes
anything.

The footer's counts can lie, and pages expand: a few bytes of RLE or
dictionary indices are millions of values. What the decoder obeys is each
page's own header (its value count, its decompressed size), so this module
reads those headers (Thrift compact protocol) and, where a column repeats
(lists, maps), the repetition levels that say where each row starts and how
many values it holds. records/parquetplan.py sizes the batches from them.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from ingestd.daemon.errors import PermanentError

from .jsontext import too_large_message

# Rows of a repeated column are counted in windows of this many (the
# largest batch read at a time).
WINDOW = 8192
HEADER_FIRST, HEADER_MOST = 16 << 10, 16 << 20  # pyarrow's own start and limit
_HEADER_BUFFER = 256 << 10  # bytes read at a time for page headers
# pyarrow keeps the pages of a string column it reads until their row group
# is read when they are small (measured: under 12 KB, kept; over 60 KB, not).
SMALL_PAGE = 32 << 10
_DATA, _DICTIONARY, _DATA_V2 = 0, 2, 3
_PLAIN_DICTIONARY, _RLE, _BIT_PACKED, _DELTA_BYTE_ARRAY, _RLE_DICTIONARY = 2, 3, 4, 7, 8
_INDICES = (_PLAIN_DICTIONARY, _RLE_DICTIONARY)
# The least bytes of a PLAIN dictionary entry, per physical type (FIXED_LEN_BYTE_ARRAY: its width).
_LEAST_BYTES = {"BOOLEAN": 0, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 4}
_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd", "LZ4_RAW": "lz4_raw"}
_REVERSED_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class _Short(Exception):
    """The buffer ends inside the header: read more."""


# Thrift compact protocol types
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
_DEPTH = 32  # nesting of structs and containers: Parquet's own structures need 6


class _Compact:
    """A reader of Thrift's compact protocol: structs as {field id: value}.

    Without a ``spec`` (page headers) a struct keeps its integers, booleans
    and structs; strings and containers are skipped. With one, only the
    fields it names, of the type it names, are kept (a field of another type
    is skipped, as Thrift's own readers do): lists of structs as lists,
    other lists as their length, strings as bytes. Every value read consumes
    at least a byte, and a size beyond the bytes left, a type id Thrift does
    not have or nesting deeper than ``_DEPTH`` is a ValueError (``_Short``
    where the buffer may just end early): malformed input ends in time
    bounded by its bytes."""

    def __init__(self, data: bytes, complete: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.complete = complete  # the buffer holds the whole structure: running out is an error

    def short(self, what: str) -> Exception:
        return ValueError(f"Thrift {what} past the end of its bytes") if self.complete else _Short()

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.short("data")
        self.pos += 1
        return self.data[self.pos - 1]

    def skip(self, n: int) -> None:
        if n < 0:
            raise ValueError("negative length")
        if self.pos + n > len(self.data):
            raise self.short("a string")
        self.pos += n

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint longer than 64 bits")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def struct(self, depth: int = 0, spec: dict[int, tuple[int, Any]] | None = None) -> dict[int, Any]:
        if depth > _DEPTH:
            raise ValueError("Thrift nested too deeply")
        fields: dict[int, Any] = {}
        last = 0
        while (head := self.byte()) & 0x0F:
            last = last + (head >> 4) if head >> 4 else self.zigzag()
            kind = head & 0x0F
            if kind in (_BOOL_TRUE, _BOOL_FALSE):  # the value is in the type
                value: Any = kind == _BOOL_TRUE
            elif spec is None:
                value = self.value(kind, depth + 1)
            else:
                wanted = spec.get(last)
                keep = wanted is not None and wanted[0] == kind
                value = self.value(kind, depth + 1, wanted[1] if wanted is not None and keep else None, keep)
                if not keep:
                    continue
            fields[last] = value
        return fields

    def value(self, kind: int, depth: int, spec: Any = None, keep: bool = False) -> Any:
        """A value of ``kind`` (a container's element: booleans take a byte)."""
        if depth > _DEPTH:
            raise ValueError("Thrift nested too deeply")
        if kind in (_BOOL_TRUE, _BOOL_FALSE):
            return self.byte() == 1
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _STRUCT:
            return self.struct(depth, spec if keep else None)
        if kind == _BYTE:
            return self.byte()
        if kind == _DOUBLE:
            self.skip(8)
            return None
        if kind == _BINARY:
            size = self.varint()
            self.skip(size)
            return self.data[self.pos - size:self.pos] if keep else None
        if kind in (_LIST, _SET):
            head = self.byte()
            size = self.varint() if head >> 4 == 15 else head >> 4
            self._room(size)
            items = [self.value(head & 0x0F, depth + 1, spec, keep) for _ in range(size)]
            return items if keep and head & 0x0F == _STRUCT else size
        if kind == _MAP:
            size = self.varint()
            self._room(2 * size)
            kinds = self.byte() if size else 0
            for _ in range(size):
                self.value(kinds >> 4, depth + 1)
                self.value(kinds & 0x0F, depth + 1)
            return None
        raise ValueError(f"unknown Thrift type {kind}")

    def _room(self, items: int) -> None:
        """Each element takes a byte at least: more than the bytes left cannot be."""
        if items > len(self.data) - self.pos:
            raise self.short(f"a container of {items} elements")


# The parts of Parquet's FileMetaData the reader uses (parquet.thrift): field
# id -> (Thrift type, what of it to keep).
_SIZE_STATISTICS = {1: (_I64, None), 2: (_LIST, None), 3: (_LIST, None)}
_COLUMN_META = {1: (_I32, None), 4: (_I32, None), 5: (_I64, None), 7: (_I64, None), 9: (_I64, None),
                11: (_I64, None), 16: (_STRUCT, _SIZE_STATISTICS)}
_COLUMN_CHUNK = {1: (_BINARY, None), 3: (_STRUCT, _COLUMN_META)}
_ROW_GROUP = {1: (_LIST, _COLUMN_CHUNK), 3: (_I64, None)}
_SCHEMA_ELEMENT = {1: (_I32, None), 2: (_I32, None), 3: (_I32, None), 4: (_BINARY, None), 5: (_I32, None)}
_FILE_META = {2: (_LIST, _SCHEMA_ELEMENT), 3: (_I64, None), 4: (_LIST, _ROW_GROUP), 6: (_BINARY, None)}
PHYSICAL = ("BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
CODEC_NAMES = ("UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW")
_REPEATED = 2


@dataclass
class Leaf:
    """A column of the schema (a leaf), named as pyarrow's ColumnDescriptor."""
    path: str
    physical_type: str
    length: int  # FIXED_LEN_BYTE_ARRAY's width
    max_repetition_level: int
    max_definition_level: int


@dataclass
class ChunkMeta:
    """A column chunk's metadata, named as pyarrow's ColumnChunkMetaData."""
    compression: str
    num_values: int
    total_compressed_size: int
    data_page_offset: int
    dictionary_page_offset: int | None

    @property
    def has_dictionary_page(self) -> bool:
        return self.dictionary_page_offset is not None


@dataclass
class Footer:
    """A Parquet file's footer, read and checked here: pyarrow's accessors of
    column chunk metadata abort the process (std::terminate, not an
    exception) on a codec it does not know, a column chunk whose type is not
    its column's, or level histograms of the wrong length; a footer that
    says any of that is refused before pyarrow is asked."""
    leaves: list[Leaf]
    groups: list[tuple[int, list[ChunkMeta]]]  # (rows, its column chunks)
    num_rows: int
    created_by: str | None


def read_footer(fh: IO[bytes]) -> Footer:
    """The footer of the Parquet file ``fh``; ValueError naming what is wrong."""
    size = fh.seek(0, 2)
    if size < 12:
        raise ValueError(f"a Parquet file has 12 bytes at least, this one {size}")
    fh.seek(size - 8)
    tail = fh.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1":
        raise ValueError("no Parquet footer (the file does not end in PAR1: encrypted, cut or not Parquet)")
    if length > size - 12:
        raise ValueError(f"the footer claims {length} bytes, the file has {size}")
    fh.seek(size - 8 - length)
    reader = _Compact(fh.read(length), complete=True)
    meta = reader.struct(spec=_FILE_META)
    leaves = _leaves(meta.get(2) or [])
    if 3 not in meta or 4 not in meta:
        raise ValueError("the footer has no row count or no row groups")
    groups = []
    for number, group in enumerate(meta[4], 1):
        chunks = group.get(1) or []
        if len(chunks) != len(leaves) or 3 not in group:
            raise ValueError(f"row group {number} has {len(chunks)} column chunks for {len(leaves)} columns"
                             if 3 in group else f"row group {number} has no row count")
        metas = [_chunk_meta(chunk, leaf, number) for chunk, leaf in zip(chunks, leaves, strict=True)]
        groups.append((group[3], metas))
    created = meta.get(6)
    return Footer(leaves, groups, meta[3], created.decode("utf-8", "replace") if created is not None else None)


def _leaves(elements: list[dict[int, Any]]) -> list[Leaf]:
    """The schema's leaves, depth first, with their levels."""
    if not elements or elements[0].get(5, 0) < 0:
        raise ValueError("the footer's schema is empty")
    leaves: list[Leaf] = []
    stack = [(elements[0].get(5, 0), "", 0, 0)]  # (children left, path, repetition, definition)
    for index, element in enumerate(elements[1:], 1):
        while stack and stack[-1][0] == 0:
            stack.pop()
        if not stack:
            raise ValueError(f"schema element {index} lies outside the schema's tree")
        left, path, rep, dfn = stack[-1]
        stack[-1] = (left - 1, path, rep, dfn)
        name = (element.get(4) or b"").decode("utf-8", "replace")
        repetition = element.get(3, 0)
        path = f"{path}.{name}" if path else name
        rep, dfn = rep + (repetition == _REPEATED), dfn + (repetition in (1, _REPEATED))
        children = element.get(5)
        if children is not None and children > 0:
            stack.append((children, path, rep, dfn))
            continue
        kind = element.get(1)
        if kind is None or not 0 <= kind < len(PHYSICAL):
            raise ValueError(f"column {path}: physical type {kind} is not Parquet's")
        width = element.get(2, 0)
        if PHYSICAL[kind] == "FIXED_LEN_BYTE_ARRAY" and not 0 < width < 1 << 31:
            raise ValueError(f"column {path}: fixed-length values of {width} bytes")
        leaves.append(Leaf(path, PHYSICAL[kind], width, rep, dfn))
    if any(left for left, *_ in stack):
        raise ValueError("the footer's schema ends before its groups' children")
    return leaves


def _chunk_meta(chunk: dict[int, Any], leaf: Leaf, group: int) -> ChunkMeta:
    where = f"row group {group}, column {leaf.path}"
    meta = chunk.get(3)
    if meta is None:
        raise ValueError(f"{where}: the column chunk has no metadata (an encrypted column?)")
    if chunk.get(1) is not None:
        raise ValueError(f"{where}: the column chunk lies in another file ({chunk[1]!r})")
    missing = [name for key, name in ((1, "type"), (4, "codec"), (5, "value count"), (7, "size"),
                                      (9, "first page")) if key not in meta]
    if missing:
        raise ValueError(f"{where}: the column chunk's metadata has no {', '.join(missing)}")
    if not 0 <= meta[1] < len(PHYSICAL) or PHYSICAL[meta[1]] != leaf.physical_type:
        raise ValueError(f"{where}: the column chunk's type {meta[1]} is not its column's {leaf.physical_type}")
    if not 0 <= meta[4] < len(CODEC_NAMES):
        raise ValueError(f"{where}: compression codec {meta[4]} is not one Parquet has")
    stats = meta.get(16) or {}
    for key, what, most in ((2, "repetition", leaf.max_repetition_level), (3, "definition", leaf.max_definition_level)):
        if stats.get(key) and stats[key] != most + 1:
            raise ValueError(f"{where}: the {what} level histogram has {stats[key]} entries, not {most + 1}")
    if 1 in stats and leaf.physical_type != "BYTE_ARRAY":
        raise ValueError(f"{where}: a byte count of strings in a column of {leaf.physical_type}")
    return ChunkMeta(CODEC_NAMES[meta[4]], meta[5], meta[7], meta[9], meta.get(11))


@dataclass(slots=True)
class Page:
    """A data page: its levels (values, nulls and empty lists included), and
    where its repetition levels are."""
    first: int  # levels before it in its column chunk
    levels: int
    size: int  # decompressed bytes
    payload: int  # file offset of its bytes
    compressed: int
    encoding: int
    version2: bool = False
    repetition_bytes: int = 0  # version 2: the bytes of its repetition levels (uncompressed, first)
    repetition_encoding: int = _RLE  # version 1


@dataclass
class Chunk:
    """A column chunk as its page headers tell it: what the plan needs of it,
    summed page by page. ``pages`` holds the pages only when asked for
    (``read_chunk``); the plan walks them again (``iter_pages``), so that its
    memory does not grow with their number."""
    path: str
    physical: str
    width: int  # FIXED_LEN_BYTE_ARRAY's length
    max_rep: int
    codec: str
    pages: list[Page] = field(default_factory=list)
    dictionary: Page | None = None  # its levels are the dictionary's entries
    largest: int = 0
    as_dictionary: bool = False  # read as a dictionary array (indices, not expanded)
    entry: int = 0  # at most the bytes of one dictionary entry
    levels: int = 0  # of its data pages, in all
    data_pages: int = 0
    index_pages: int = 0  # data pages of dictionary indices
    index_levels: int = 0  # their levels
    other_strings: int = 0  # the string bytes the other data pages yield (string_bytes)
    small_pages: int = 0  # bytes of its pages under SMALL_PAGE decompressed, in a string column

    @property
    def dictionary_bytes(self) -> int:
        return self.dictionary.size if self.dictionary else 0

    @property
    def indices_only(self) -> bool:
        """Every data page holds dictionary indices."""
        return self.dictionary is not None and self.index_pages == self.data_pages

    def strings(self) -> int:
        """At most the bytes of strings (or binary) decoding all its pages yields."""
        if self.physical != "BYTE_ARRAY":
            return 0
        return self.other_strings + (0 if self.as_dictionary else self.index_levels * self.entry)


class _Headers:
    """Page headers read through a buffer: many small pages cost a read of
    the buffer each, not a read each."""

    def __init__(self, fh: IO[bytes], end: int) -> None:
        self.fh, self.end = fh, end
        self.start, self.data = 0, b""

    def read(self, offset: int) -> tuple[dict[int, Any], int]:
        """The page header at ``offset`` and its length in bytes."""
        want = HEADER_FIRST
        while True:
            wanted = min(want, self.end - offset)
            if not self.start <= offset or offset + wanted > self.start + len(self.data):
                self.fh.seek(offset)
                self.start, self.data = offset, self.fh.read(min(max(want, _HEADER_BUFFER), self.end - offset))
            data = self.data[offset - self.start:offset - self.start + want]
            reader = _Compact(data)
            try:
                return reader.struct(), reader.pos
            except _Short:
                if len(data) < want or want >= HEADER_MOST:
                    raise ValueError(f"a page header at byte {offset} is cut or over {HEADER_MOST} bytes") from None
                want *= 4


def _chunk_range(meta: Any, file_size: int, padded: bool) -> tuple[int, int]:
    """Where pyarrow reads a column chunk (its ComputeColumnChunkRange)."""
    start = meta.data_page_offset
    if meta.has_dictionary_page and 0 < (meta.dictionary_page_offset or 0) < start:
        start = meta.dictionary_page_offset
    end = start + meta.total_compressed_size
    if start < 0 or end > file_size:
        raise ValueError("column chunk outside the file")
    return start, min(end + 100, file_size) if padded else end


def new_chunk(meta: Any, column: Any) -> Chunk:
    """A column chunk (``meta``) of ``column``, its pages not read yet."""
    return Chunk(column.path, column.physical_type, column.length or 0, column.max_repetition_level,
                 meta.compression)


def iter_pages(fh: IO[bytes], chunk: Chunk, meta: Any, file_size: int, padded: bool,
               page_cap: int) -> Iterator[Page]:
    """The data pages of a column chunk, read as pyarrow reads them: from its
    first page until its declared value count is reached or its bytes end;
    ``chunk`` sums them as they pass and takes its dictionary page. A page
    over ``page_cap`` bytes, decompressed or compressed (pyarrow allocates
    both as its header says), is too_large; sizes a header cannot hold (a
    dictionary of more entries than its bytes can hold, repetition levels
    longer than their page) are a ValueError."""
    chunk.levels = chunk.largest = chunk.data_pages = chunk.index_pages = chunk.index_levels = 0
    chunk.other_strings = chunk.small_pages = 0
    chunk.dictionary = None
    pos, end = _chunk_range(meta, file_size, padded)
    headers = _Headers(fh, end)
    least = _LEAST_BYTES.get(chunk.physical, chunk.width)  # of a PLAIN dictionary entry
    while chunk.levels < meta.num_values and pos < end:
        header, length = headers.read(pos)
        kind, size, compressed = header.get(1), header.get(2, -1), header.get(3, -1)
        if size < 0 or compressed < 0:
            raise ValueError("a page header without its sizes")
        if max(size, compressed) > page_cap:
            raise PermanentError("too_large", f"column {chunk.path}: a Parquet page of {max(size, compressed)} bytes "
                                 f"{'decompressed' if size >= compressed else 'compressed'} exceeds {page_cap} bytes "
                                 "(8 x landing.max_record_bytes)", limit=page_cap)
        chunk.largest = max(chunk.largest, size)
        pos += length
        if kind == _DICTIONARY and chunk.dictionary is None:
            entries = (header.get(7) or {}).get(1, 0)
            if not 0 <= entries * least <= size:
                raise ValueError(f"column {chunk.path}: a dictionary page of {size} bytes claims {entries} entries")
            chunk.dictionary = Page(0, entries, size, pos, compressed, 0)
            chunk.entry = size
        elif kind in (_DATA, _DATA_V2):
            inner = header.get(5 if kind == _DATA else 8) or {}
            levels = inner.get(1, -1)
            if levels < 0:
                raise ValueError("a data page without its value count")
            if kind == _DATA:
                page = Page(chunk.levels, levels, size, pos, compressed, inner.get(2, 0),
                            repetition_encoding=inner.get(4, _RLE))
            else:
                page = Page(chunk.levels, levels, size, pos, compressed, inner.get(4, 0), True, inner.get(6, 0))
                if not 0 <= page.repetition_bytes <= compressed:
                    raise ValueError(f"column {chunk.path}: a page of {compressed} bytes claims "
                                     f"{page.repetition_bytes} bytes of repetition levels")
            chunk.levels += levels
            chunk.data_pages += 1
            if chunk.physical == "BYTE_ARRAY" and size < SMALL_PAGE:
                chunk.small_pages += size
            if page.encoding in _INDICES:
                chunk.index_pages += 1
                chunk.index_levels += levels
            else:
                chunk.other_strings += string_bytes(chunk, page)
            yield page
        pos += compressed


def read_chunk(fh: IO[bytes], meta: Any, column: Any, file_size: int, padded: bool, page_cap: int) -> Chunk:
    """A column chunk with every page header kept (``iter_pages``)."""
    chunk = new_chunk(meta, column)
    chunk.pages = list(iter_pages(fh, chunk, meta, file_size, padded, page_cap))
    return chunk


def old_parquet_mr(created_by: str | None) -> bool:
    """Files of parquet-mr before 1.2.9 under-count their chunks (PARQUET-816)."""
    found = re.match(r"parquet-mr version (\d+)\.(\d+)\.(\d+)", created_by or "")
    return found is not None and tuple(int(g) for g in found.groups()) < (1, 2, 9)


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


def _decompress(data: bytes, codec: str, size: int) -> bytes:
    if codec == "UNCOMPRESSED":
        return data
    if codec == "LZ4":  # Hadoop's framing of LZ4 blocks, or none (as pyarrow tries both)
        try:
            return _hadoop_lz4(data, size)
        except (ValueError, pa.ArrowException):
            codec = "LZ4_RAW"
    if codec not in _CODECS:
        raise ValueError(f"pages compressed with {codec} cannot be read")
    return pa.Codec(_CODECS[codec]).decompress(data, decompressed_size=size).to_pybytes()


def _hadoop_lz4(data: bytes, size: int) -> bytes:
    out, pos = [], 0
    codec = pa.Codec("lz4_raw")
    while pos < len(data):
        expanded, packed = int.from_bytes(data[pos:pos + 4], "big"), int.from_bytes(data[pos + 4:pos + 8], "big")
        if expanded > size or pos + 8 + packed > len(data):
            raise ValueError("not Hadoop LZ4 framing")
        out.append(codec.decompress(data[pos + 8:pos + 8 + packed], decompressed_size=expanded).to_pybytes())
        pos += 8 + packed
    return b"".join(out)


def _repetition_levels(fh: IO[bytes], chunk: Chunk, page: Page) -> tuple[bytes, bool]:
    """A page's repetition level bytes, and whether they are the RLE hybrid
    (else the old BIT_PACKED encoding, turned into least significant bit first)."""
    if page.version2:
        fh.seek(page.payload)  # version 2 keeps its levels uncompressed, first
        return fh.read(page.repetition_bytes), True
    fh.seek(page.payload)
    data = _decompress(fh.read(page.compressed), chunk.codec, page.size)
    encoding = page.repetition_encoding
    if encoding == _RLE:
        length = int.from_bytes(data[:4], "little")
        return data[4:4 + length], True
    if encoding == _BIT_PACKED:
        width = chunk.max_rep.bit_length()
        return data[:(page.levels * width + 7) // 8].translate(_REVERSED_BITS), False
    raise ValueError(f"repetition levels in encoding {encoding}")


def string_bytes(chunk: Chunk, page: Page, levels: int | None = None) -> int:
    """At most the bytes of strings (or binary) that decoding ``levels`` of
    the page yields (all of it by default): its own bytes; for prefix-shared
    strings, whose values may each be as long as the page, that many times;
    for dictionary indices, none when they are read as indices (expanded
    later, checked then) and else as many entries as long as the longest."""
    levels = page.levels if levels is None else levels
    if chunk.physical != "BYTE_ARRAY":
        return 0
    if page.encoding in _INDICES:
        return 0 if chunk.as_dictionary else levels * chunk.entry
    if page.encoding == _DELTA_BYTE_ARRAY:
        return levels * page.size
    return page.size


def longest_entry(fh: IO[bytes], chunk: Chunk) -> int:
    """The length of the longest entry of a string column's dictionary."""
    page = chunk.dictionary
    if page is None:
        return 0
    fh.seek(page.payload)
    data = _decompress(fh.read(page.compressed), chunk.codec, page.size)
    pos = most = 0
    for _ in range(page.levels):  # PLAIN: each entry's length (4 bytes), then its bytes
        length = int.from_bytes(data[pos:pos + 4], "little")
        most = max(most, length)
        pos += 4 + length
        if pos > len(data):
            break
    if pos > len(data):
        raise ValueError(f"column {chunk.path}: the dictionary page is cut short")
    return most


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
        if inside and page.encoding not in _INDICES and string_bytes(chunk, page):
            # Each value costs at most 10 bytes besides its string (length, levels).
            counter.add_inside(max(0, page.size - 10 * page.levels))
        if sink is not None and counter.windows:
            count_strings(counter.windows[-1])
        if counter.done:
            break
    return counter.finish()
