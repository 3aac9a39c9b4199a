"""Files into records, and the dialect records are judged by: the formats
(formats.py, the registry, and one format_<name>.py each), exact JSON text
and numbers, Parquet planning, Arrow-to-JSON, and ingestd's JSON Schema
dialect (dialect.py).

This room takes only the error types from ``ingestd.daemon.errors``; the
daemon's config and the consumers both import it, and it imports nothing
else of theirs (tests/test_layers.py).
"""
