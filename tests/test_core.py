"""The consumer core with a recording publisher: events in, bronze rows,
ledger rows and dead messages out, against the real PostgreSQL and no
broker. Also the shape of the code: its settings table against the docs
and the example config, and no import cycle."""
import ast
import hashlib
import json
import re
from pathlib import Path

import pytest

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.daemon.config import Config, PollerConfig, build_config, settings_of
from ingestd.daemon.events import PayloadEvent

from .conftest import REPO, SHARED_DATA, query
from .doubles import RecordingPublisher

GDP = SHARED_DATA / "fred" / "pyfredapi_series_observations_GDP.json"


@pytest.fixture
def core(tmp_path, database_url):
    """An IngestContext on this test's database, publishing nowhere."""
    def make(**landing):
        doc = {"landing": {"dir": str(tmp_path / "data_lake"), **landing}, "database": {"url": database_url},
               "sources": [{"name": "fred_gdp", "kind": "api", "provider": "fred", "series": ["GDP"]}]}
        (tmp_path / "data_lake").mkdir(exist_ok=True)
        context = IngestContext(build_config(doc, tmp_path, environ={}), RecordingPublisher(), "core-test")
        contexts.append(context)
        return context
    contexts: list[IngestContext] = []
    yield make
    for context in contexts:
        context.close()


def payload_event(body: bytes, landing: Path | None = None) -> PayloadEvent:
    """The event the poller publishes for ``body``: inline, or stored under
    _payloads/ when ``landing`` is given."""
    digest = hashlib.sha256(body).hexdigest()
    stored = None
    if landing is not None:
        stored = f"_payloads/fred_gdp/2026/11/25/{digest}.json"
        (landing / stored).parent.mkdir(parents=True, exist_ok=True)
        (landing / stored).write_bytes(body)
    return PayloadEvent(source="fred_gdp", endpoint="https://api.stlouisfed.org/fred/series/observations?series_id=GDP",
                        status_code=200, fetched_at="2026-11-25T12:00:00+00:00", body_sha256=digest,
                        body_size=len(body), body=None if stored else body.decode(), body_path=stored,
                        context={"series_id": "GDP"})


def test_a_payload_loads_and_a_later_one_loads_only_its_revised_observations(core, db):
    ctx = core()
    body = GDP.read_bytes()
    first = ingest_message(ctx, payload_event(body).to_json())
    assert (first.status, first.rows) == ("success", 315)
    doc = json.loads(body)
    doc["observations"][-1]["value"] = "99999.999"  # a revision of the latest quarter
    doc["observations"][-1]["realtime_start"] = "2026-11-25"  # changes with every call: not a revision
    doc["observations"][0]["realtime_end"] = "2026-11-25"
    second = ingest_message(ctx, payload_event(json.dumps(doc).encode()).to_json())
    assert (second.status, second.rows) == ("success", 1)
    assert query(db, "SELECT error_summary FROM ops.pipeline_runs WHERE run_id = %s", (second.run_id,)) == [
        ("314 of 315 observations unchanged since an earlier poll, not loaded again",)]
    assert query(db, "SELECT count(*), count(DISTINCT raw_data->>'date') FROM bronze.fred_gdp") == [(316, 315)]
    assert query(db, "SELECT raw_data->>'value' FROM bronze.fred_gdp WHERE pipeline_run_id = %s",
                 (second.run_id,)) == [("99999.999",)]
    assert ctx.publisher.sent == []  # nothing dead-lettered


def test_a_stored_payload_streams_from_its_file_and_is_archived(core, db, tmp_path):
    ctx = core()
    landing = tmp_path / "data_lake"
    event = payload_event(GDP.read_bytes(), landing)
    outcome = ingest_message(ctx, event.to_json())
    assert (outcome.status, outcome.rows) == ("success", 315)
    assert not (landing / event.body_path).exists()
    assert len(list((landing / "_archive" / "fred_gdp").rglob("*.json"))) == 1
    assert query(db, "SELECT source_filename, size_bytes FROM ops.raw_ingest_manifest") == [
        (event.body_path, GDP.stat().st_size)]


def test_a_stored_payload_over_max_file_bytes_is_dead_lettered_too_large(core, db, tmp_path):
    ctx = core(max_file_bytes=1000)
    event = payload_event(GDP.read_bytes(), tmp_path / "data_lake")
    outcome = ingest_message(ctx, event.to_json())
    assert (outcome.status, outcome.reason) == ("failure", "too_large")
    (exchange, key, body, message_id, headers), = ctx.publisher.sent
    assert (exchange, message_id, headers["x-ingestd-reason"]) == ("ingest.dead", event.event_id, "too_large")
    assert json.loads(body)["body_path"] == event.body_path
    assert query(db, "SELECT reason, event_id::text FROM ops.dead_letters") == [("too_large", event.event_id)]
    assert query(db, "SELECT to_regclass('bronze.fred_gdp') IS NULL") == [(True,)]


def test_a_message_that_is_not_an_event_is_parked_with_its_body(core, db):
    ctx = core()
    outcome = ingest_message(ctx, b'{"kind": "file", "source": "x"')
    assert (outcome.status, outcome.reason) == ("failure", "bad_event")
    (exchange, key, body, _, headers), = ctx.publisher.sent
    assert (exchange, key, body, headers["x-ingestd-reason"]) == (
        "ingest.dead", "bad_event", b'{"kind": "file", "source": "x"', "bad_event")
    assert query(db, "SELECT reason, event->>'raw' FROM ops.dead_letters") == [
        ("bad_event", '{"kind": "file", "source": "x"')]


# -- the settings table ----------------------------------------------------

def _documented_defaults() -> dict[str, str]:
    """``key: default`` of the table in docs/configuration.md."""
    rows = {}
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text[text.index("## Configuration"):text.index("\n## ", text.index("## Configuration") + 1)]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and not cells[0].startswith("`[[sources]]"):
            keys = [k.strip(" `") for k in cells[0].split(",")]
            shown = re.sub(r"\s*\(.*?\)", "", cells[1])
            values = [v.strip() for v in shown.split(",")] if len(keys) > 1 else [shown]
            for key, value in zip(keys, values, strict=True):
                rows[key if "." in key else f"{keys[0].split('.')[0]}.{key}"] = value.strip("`")
    return rows


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "{" + ", ".join(f"{k} = {v:g}" for k, v in value) + "}"
    return '""' if value == "" else str(value)


def test_every_setting_is_documented_with_its_default_and_named_in_the_example_config():
    documented = _documented_defaults()
    example = (REPO / "ingestd.example.toml").read_text()
    settings = [(key, field.default) for cls in (Config, PollerConfig) for key, field in settings_of(cls)]
    assert len(settings) > 25
    for key, default in settings:
        assert key in documented, f"{key} is missing from docs/configuration.md"
        shown = documented[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(shown) == default, key
        else:
            assert shown == _shown(default), key
        section, name = key.split(".")
        assert re.search(rf"(?m)^#? ?\[{section}\]$", example), f"[{section}] is missing from ingestd.example.toml"
        assert re.search(rf"(?m)^#? ?{name} = ", example), f"{key} is missing from ingestd.example.toml"


# -- import cycles ---------------------------------------------------------

def _imports(path: Path, package: str) -> set[str]:
    """ingestd modules imported by a module (at any level, except under
    ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
        node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES}


def _module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(["ingestd", *parts])


FILES = {_module_name(p): p for folder in ("daemon", "consumers") for p in (REPO / folder).rglob("*.py")
         if "package" not in p.parts}
MODULES = set(FILES)


def test_no_module_imports_itself_through_others():
    graph = {}
    for name, path in FILES.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = _imports(path, package) - {name}
    assert graph["ingestd.consumers.ingest"] >= {"ingestd.consumers.inputs", "ingestd.daemon.ledger"}
    cycles = []

    def visit(node, trail):
        for nxt in graph.get(node, ()):
            if nxt == trail[0]:
                cycles.append(" -> ".join([*trail, nxt]))
            elif nxt not in trail and nxt > trail[0]:
                visit(nxt, [*trail, nxt])
    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []
