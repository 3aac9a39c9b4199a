"""Property-based tests of the readers and of what bronze stores.

The readers run in a child process under a memory cap (tests/fuzz_readers.py):
a reader that blows up fails the test, not the machine. CI runs a bounded
number of examples; set INGESTD_TEST_EXAMPLES for more.
"""
import io
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers import bronze
from ingestd.consumers.validation import RecordValidator
from ingestd.daemon.sources import SourceConfig
from ingestd.records.format_json import read_json

from .conftest import REPO
from .fuzz_readers import record_text, reference

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))


@pytest.mark.slow
def test_readers_hold_their_properties_under_a_memory_cap():
    result = subprocess.run([sys.executable, "-m", "tests.fuzz_readers", "--examples", str(EXAMPLES),
                             "--memory-mb", "1024"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "hostile inputs: ok" in result.stdout
    assert result.stdout.count(": ok (") == 7, result.stdout


@pytest.mark.integration
@settings(max_examples=max(20, EXAMPLES // 3), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=st.lists(record_text(), min_size=1, max_size=5))
def test_bronze_holds_each_json_record_as_the_reference_parse_says(db, records):
    """Through the real path (reader, COPY stream, binary COPY into jsonb):
    numbers of any size and precision, strings exactly."""
    document = ("[" + ",".join(records) + "]").encode()
    triples = [(n, value, text) for n, (value, text) in
               enumerate(read_json(io.BufferedReader(io.BytesIO(document))), 1)]
    db.autocommit = False
    try:
        with db.cursor() as cur:
            bronze.ensure_bronze_table(cur, SourceConfig("fuzz"))
            lineage = {"pipeline_run_id": uuid.uuid4(), "event_id": uuid.uuid4(), "file_path": "fuzz/doc.json"}
            stream = bronze.CopyStream(triples, RecordValidator(None), "fuzz", lineage, bronze.LoadStats())
            bronze.copy_records(cur, "fuzz", stream)
            cur.execute("SELECT raw_data::text FROM bronze.fuzz ORDER BY record_number")
            stored = [row[0] for row in cur.fetchall()]
    finally:
        db.rollback()
        db.autocommit = True
    assert [reference(text) for text in stored] == [reference(text) for text in records]


def test_reference_compares_numbers_by_value_not_by_float():
    # The comparison the tests above rely on: a float would make these equal.
    assert reference('{"n": 123456789012345678901234567890}') != reference('{"n": 123456789012345680000000000000}')
    assert reference('{"n": 1.50}') == {"n": Decimal("1.5")}
    assert json.loads('{"n": 123456789012345678901234567890}')["n"] == 123456789012345678901234567890
