"""A reader of Thrift's compact protocol, bounded by its bytes.

Parquet writes its footer and every page header in Thrift's compact
protocol; records/parquetfooter.py and records/parquetpages.py read them
with ``CompactReader`` before pyarrow is asked anything. Malformed input
(sizes past the bytes left, type ids Thrift does not have, nesting past
``_DEPTH``) is a ValueError, in time bounded by its bytes; a buffer that
merely ends early is ``ShortBuffer`` (read more and try again).
"""
from __future__ import annotations

from typing import Any


class ShortBuffer(Exception):
    """The buffer ends inside the header: read more."""



# Thrift compact protocol types
BOOL_TRUE, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
_DEPTH = 32  # nesting of structs and containers: Parquet's own structures need 6


class CompactReader:
    """A reader of Thrift's compact protocol: structs as {field id: value}.

    Without a ``spec`` (page headers) a struct keeps its integers, booleans
    and structs; strings and containers are skipped. With one, only the
    fields it names, of the type it names, are kept (a field of another type
    is skipped, as Thrift's own readers do): lists of structs as lists,
    other lists as their length, strings as bytes. Every value read consumes
    at least a byte, and a size beyond the bytes left, a type id Thrift does
    not have or nesting deeper than ``_DEPTH`` is a ValueError (``ShortBuffer``
    where the buffer may just end early): malformed input ends in time
    bounded by its bytes."""

    def __init__(self, data: bytes, complete: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.complete = complete  # the buffer holds the whole structure: running out is an error

    def short(self, what: str) -> Exception:
        return ValueError(f"Thrift {what} past the end of its bytes") if self.complete else ShortBuffer()

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
            if kind in (BOOL_TRUE, BOOL_FALSE):  # the value is in the type
                value: Any = kind == BOOL_TRUE
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
        if kind in (BOOL_TRUE, BOOL_FALSE):
            return self.byte() == 1
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == STRUCT:
            return self.struct(depth, spec if keep else None)
        if kind == BYTE:
            return self.byte()
        if kind == DOUBLE:
            self.skip(8)
            return None
        if kind == BINARY:
            size = self.varint()
            self.skip(size)
            return self.data[self.pos - size:self.pos] if keep else None
        if kind in (LIST, SET):
            head = self.byte()
            size = self.varint() if head >> 4 == 15 else head >> 4
            self._room(size)
            items = [self.value(head & 0x0F, depth + 1, spec, keep) for _ in range(size)]
            return items if keep and head & 0x0F == STRUCT else size
        if kind == MAP:
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
