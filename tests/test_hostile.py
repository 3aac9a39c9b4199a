"""Hostile and odd input: each gets its reason code or loads correctly, and
nothing else is lost. Against the real PostgreSQL and RabbitMQ."""
import gzip

import pytest

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.config import load_config

from .conftest import SHARED_DATA, drop_file, query
from .test_ingest import event_for

pytestmark = pytest.mark.integration

VALET_CSV = SHARED_DATA / "boc" / "valet_observations_FXEURCAD_FXUSDCAD.raw.csv"
HOSTILE_SOURCES = """
[[sources]]
name = "lines"
format = "jsonl"

[[sources]]
name = "docs"
format = "json"

[[sources]]
name = "tables"
format = "csv"

[[sources]]
name = "valet_csv"
format = "csv"
skip_lines = 9
"""


@pytest.fixture
def hostile(write_config):
    config = load_config(write_config(landing_extra="max_file_bytes = 50000000", sources=HOSTILE_SOURCES))
    ctx = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit)), "t")
    yield config, ctx
    ctx.close()


def load(hostile, relative, data):
    config, ctx = hostile
    drop_file(config.landing_dir, relative, data)
    return ingest_message(ctx, event_for(config, relative).to_json())


def test_10000_deep_nesting_is_a_parse_error_in_both_json_formats(hostile, db):
    deep = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    assert load(hostile, "lines/deep.jsonl", deep + b"\n").reason == "parse_error"
    assert load(hostile, "docs/deep.json", b"[" + deep + b"]").reason == "parse_error"
    assert load(hostile, "lines/fine.jsonl", b'{"ok": true}\n').status == "success"


def test_a_100_mb_record_is_too_large_before_it_is_read_whole(hostile, tmp_path):
    config, ctx = hostile
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as fh:
        fh.write(b'{"blob": "')
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b'"}\n')
    drop_file(config.landing_dir, "lines/big.jsonl", big)
    config_no_file_limit = config.__class__(**{**config.__dict__, "max_file_bytes": None})
    ctx.settings = config_no_file_limit
    outcome = ingest_message(ctx, event_for(config, "lines/big.jsonl").to_json())
    assert (outcome.status, outcome.reason) == ("failure", "too_large")
    assert "exceeds" in outcome.message


def test_a_1_mb_csv_field_loads_whole(hostile, db):
    field = "é" * 500_000  # 1,000,000 bytes of UTF-8
    assert load(hostile, "tables/wide.csv", f"id,text\r\n1,\"{field}\"\r\n".encode()).status == "success"
    assert query(db, "SELECT length(raw_data->>'text') FROM bronze.tables") == [(500_000,)]


def test_utf16_with_bom_loads_and_latin1_is_an_encoding_error(hostile, db):
    text = "name,city\r\nZoë,Montréal\r\n"
    assert load(hostile, "tables/utf16.csv", text.encode("utf-16")).status == "success"
    assert query(db, "SELECT raw_data FROM bronze.tables") == [({"name": "Zoë", "city": "Montréal"},)]
    outcome = load(hostile, "tables/latin1.csv", text.encode("latin-1"))
    assert outcome.reason == "encoding_error" and "line 2" in outcome.message


def test_line_endings_headers_and_header_only(hostile, db):
    assert load(hostile, "tables/cr.csv", b"a,b\r1,2\r3,4").rows == 2
    assert load(hostile, "tables/dup.csv", b"a,a\n1,2\n").reason == "parse_error"
    assert load(hostile, "tables/blank.csv", b"a,,c\n1,2,3\n").reason == "parse_error"
    header_only = load(hostile, "tables/header.csv", b"a,b,c\r\n")
    assert (header_only.status, header_only.rows) == ("success", 0)


def test_a_255_byte_file_name_loads_and_archives(hostile, db):
    config, _ = hostile
    name = ("ü" * 125) + "x.csv"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    assert load(hostile, f"tables/{name}", b"a\n1\n").status == "success"
    assert [p.name for p in (config.landing_dir / "_archive").rglob("*.csv")] == [name]
    assert query(db, "SELECT file_path FROM bronze.tables") == [(f"tables/{name}",)]


def test_gzip_bomb_is_refused_as_too_large(hostile, db):
    bomb = gzip.compress(b'{"a": 1}\n' * 8_000_000)  # 72 MB expanded, past the 50 MB limit
    assert len(bomb) < 200_000
    outcome = load(hostile, "lines/bomb.jsonl.gz", bomb)
    assert (outcome.status, outcome.reason) == ("failure", "too_large")
    assert query(db, "SELECT to_regclass('bronze.lines')") == [(None,)]


def test_valet_csv_with_bom_and_three_sections(hostile, db, write_config):
    config, ctx = hostile
    lines = VALET_CSV.read_bytes().decode("utf-8-sig").splitlines()
    expected = len([line for line in lines[10:] if line.strip()])
    outcome = load(hostile, "valet_csv/fx.csv", VALET_CSV)
    assert (outcome.status, outcome.rows) == ("success", expected)
    first = query(db, "SELECT raw_data FROM bronze.valet_csv WHERE record_number = 1")[0][0]
    assert first == {"date": "2017-01-03", "FXEURCAD": "1.3973", "FXUSDCAD": "1.3435"}
    # Without skip_lines the preamble is a ragged table: a parse error that says what to do.
    outcome = load(hostile, "tables/fx.csv", VALET_CSV)
    assert outcome.reason == "parse_error" and "skip_lines" in outcome.message
