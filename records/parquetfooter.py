"""A Parquet file's footer, read and checked before pyarrow is asked.

pyarrow's accessors of column chunk metadata abort the process
(std::terminate, not an exception) on a codec it does not know, a column
chunk whose type is not its column's, or level histograms of the wrong
length. ``read_footer`` reads the parts of FileMetaData the reader uses
(the schema's leaves with their levels, each row group's rows and column
chunks) with records/thriftcompact.py, and refuses a footer that says any
of that with a ValueError naming what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from .thriftcompact import BINARY, I32, I64, LIST, STRUCT, CompactReader

# The parts of Parquet's FileMetaData the reader uses (parquet.thrift): field
# id -> (Thrift type, what of it to keep).
_SIZE_STATISTICS = {1: (I64, None), 2: (LIST, None), 3: (LIST, None)}
_COLUMN_META = {1: (I32, None), 4: (I32, None), 5: (I64, None), 7: (I64, None), 9: (I64, None),
                11: (I64, None), 16: (STRUCT, _SIZE_STATISTICS)}
_COLUMN_CHUNK = {1: (BINARY, None), 3: (STRUCT, _COLUMN_META)}
_ROW_GROUP = {1: (LIST, _COLUMN_CHUNK), 3: (I64, None)}
_SCHEMA_ELEMENT = {1: (I32, None), 2: (I32, None), 3: (I32, None), 4: (BINARY, None), 5: (I32, None)}
_FILE_META = {2: (LIST, _SCHEMA_ELEMENT), 3: (I64, None), 4: (LIST, _ROW_GROUP), 6: (BINARY, None)}
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
    reader = CompactReader(fh.read(length), complete=True)
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
