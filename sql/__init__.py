"""Numbered SQL migrations, applied in order by `ingestd migrate` (see daemon/db.py)."""
