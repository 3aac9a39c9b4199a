"""Parquet page headers, read as a stream before pyarrow decodes anything.

The footer's counts can lie, and pages expand: a few bytes of RLE or
dictionary indices are millions of values. What the decoder obeys is each
page's own header (its value count, its decompressed size), so this module
reads those headers (Thrift compact protocol, records/thriftcompact.py) as
pyarrow reads them, column chunk by column chunk, and sums up what a chunk
holds (``Chunk``) without keeping a page each; it also reads a page's
bytes where they must be looked at (``decompress``, ``longest_entry``).
Where a column repeats, records/parquetlevels.py reads the repetition
levels of the pages; records/parquetplan.py sizes the batches from both.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa

from ingestd.daemon.errors import PermanentError

from .thriftcompact import CompactReader, ShortBuffer

HEADER_FIRST, HEADER_MOST = 16 << 10, 16 << 20  # pyarrow's own start and limit
_HEADER_BUFFER = 256 << 10  # bytes read at a time for page headers
# pyarrow keeps the pages of a string column it reads until their row group
# is read when they are small (measured: under 12 KB, kept; over 60 KB, not).
SMALL_PAGE = 32 << 10
_DATA, _DICTIONARY, _DATA_V2 = 0, 2, 3
PLAIN_DICTIONARY, RLE, BIT_PACKED, DELTA_BYTE_ARRAY, RLE_DICTIONARY = 2, 3, 4, 7, 8
INDICES = (PLAIN_DICTIONARY, RLE_DICTIONARY)
# The least bytes of a PLAIN dictionary entry, per physical type (FIXED_LEN_BYTE_ARRAY: its width).
_LEAST_BYTES = {"BOOLEAN": 0, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 4}
_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd", "LZ4_RAW": "lz4_raw"}


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
    repetition_encoding: int = RLE  # version 1


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
            reader = CompactReader(data)
            try:
                return reader.struct(), reader.pos
            except ShortBuffer:
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
                            repetition_encoding=inner.get(4, RLE))
            else:
                page = Page(chunk.levels, levels, size, pos, compressed, inner.get(4, 0), True, inner.get(6, 0))
                if not 0 <= page.repetition_bytes <= compressed:
                    raise ValueError(f"column {chunk.path}: a page of {compressed} bytes claims "
                                     f"{page.repetition_bytes} bytes of repetition levels")
            chunk.levels += levels
            chunk.data_pages += 1
            if chunk.physical == "BYTE_ARRAY" and size < SMALL_PAGE:
                chunk.small_pages += size
            if page.encoding in INDICES:
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


def decompress(data: bytes, codec: str, size: int) -> bytes:
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


def string_bytes(chunk: Chunk, page: Page, levels: int | None = None) -> int:
    """At most the bytes of strings (or binary) that decoding ``levels`` of
    the page yields (all of it by default): its own bytes; for prefix-shared
    strings, whose values may each be as long as the page, that many times;
    for dictionary indices, none when they are read as indices (expanded
    later, checked then) and else as many entries as long as the longest."""
    levels = page.levels if levels is None else levels
    if chunk.physical != "BYTE_ARRAY":
        return 0
    if page.encoding in INDICES:
        return 0 if chunk.as_dictionary else levels * chunk.entry
    if page.encoding == DELTA_BYTE_ARRAY:
        return levels * page.size
    return page.size


def longest_entry(fh: IO[bytes], chunk: Chunk) -> int:
    """The length of the longest entry of a string column's dictionary."""
    page = chunk.dictionary
    if page is None:
        return 0
    fh.seek(page.payload)
    data = decompress(fh.read(page.compressed), chunk.codec, page.size)
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
