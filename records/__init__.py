"""Reading files into records: the formats, exact JSON text, Parquet planning and Arrow-to-JSON.

This room takes only the error types from ``ingestd.daemon.errors``; the daemon's config and the
consumers both import it, and it imports nothing else of theirs.
"""
