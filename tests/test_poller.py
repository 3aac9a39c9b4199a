"""The API poller against a real local HTTP server and the real PostgreSQL and RabbitMQ."""
import json
import os
import signal
import subprocess
import time
from datetime import date, timedelta

import pytest

from .api_server import ApiServer
from .conftest import SHARED_DATA, ingestd_cmd, query
from .test_e2e import wait_for

pytestmark = pytest.mark.integration

KEY = "fredkey-0123456789abcdef0123456789"  # the shape of a FRED key; must appear nowhere
GDP = SHARED_DATA / "fred" / "pyfredapi_series_observations_GDP.json"
VALET_2024 = SHARED_DATA / "boc" / "valet_observations_26FX_2024.raw.json"
FRED_PATH = "/fred/series/observations"
VALET_PATH = "/valet/observations/FXAUDCAD,FXUSDCAD/json"
REPO_SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "schemas")


@pytest.fixture
def api():
    server = ApiServer()
    server.routes[FRED_PATH] = GDP.read_bytes()
    server.routes[VALET_PATH] = VALET_2024.read_bytes()
    yield server
    server.close()


@pytest.fixture
def poller_config(write_config, api):
    def make(poller_extra: str = "", fred_extra: str = "", valet_extra: str = ""):
        sources = f"""
[[sources]]
name = "fred_gdp"
kind = "api"
provider = "fred"
series = ["GDP"]
api_key_env = "FRED_API_KEY"
base_url = "{api.url}"
interval = "1h"
lookback_days = 400
schema = "{REPO_SCHEMAS}/fred_observation.json"
{fred_extra}

[[sources]]
name = "boc_fx"
kind = "api"
provider = "valet"
series = ["FXAUDCAD", "FXUSDCAD"]
base_url = "{api.url}"
interval = "1h"
lookback_days = 7
schema = "{REPO_SCHEMAS}/valet_observation.json"
{valet_extra}
"""
        extra = ("[poller]\nretry_base_seconds = 0.05\nmax_attempts = 5\nmax_retry_seconds = 20\n"
                 "timeout_seconds = 1\n" + poller_extra)
        return write_config(extra=extra, sources=sources)
    return make


@pytest.fixture
def env():
    return {**os.environ, "FRED_API_KEY": KEY}


@pytest.fixture
def consumer(procs, env):
    return lambda config_path: procs(config_path, "consume", env=env)


def poll_once(config_path, env, tmp_path, *sources):
    result = subprocess.run(ingestd_cmd("--config", str(config_path), "poll", "--once", *sources),
                            capture_output=True, text=True, env=env, timeout=120)
    (tmp_path / "poll-once.log").open("a").write(result.stdout + result.stderr)
    return result


def finished(db, source):
    return query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE source = %s AND status <> 'running'",
                 (source,))[0][0]


def assert_key_nowhere(db, tmp_path):
    for log in tmp_path.glob("*.log"):
        assert KEY not in log.read_text(errors="replace"), log.name
    tables = query(db, "SELECT table_schema || '.' || table_name FROM information_schema.tables"
                       " WHERE table_schema IN ('ops', 'bronze')")
    for (table,) in tables:
        schema, name = table.split(".")
        dump = query(db, f'SELECT coalesce(string_agg(t::text, E\'\\n\'), \'\') FROM "{schema}"."{name}" t')[0][0]
        assert KEY not in dump, table
    for path in (tmp_path / "data_lake").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_fred_gdp_loads_315_rows_once_and_the_key_is_nowhere(poller_config, env, consumer, db, api, tmp_path):
    config_path = poller_config()
    consumer(config_path)
    first = poll_once(config_path, env, tmp_path, "fred_gdp")
    assert first.returncode == 0, first.stderr
    assert "fred_gdp: success" in first.stdout
    wait_for(lambda: finished(db, "fred_gdp") == 1)
    assert query(db, "SELECT count(*), count(*) FILTER (WHERE raw_data->>'value' = '.'),"
                     " count(DISTINCT raw_data->>'series_id') FROM bronze.fred_gdp") == [(315, 4, 1)]
    row = query(db, "SELECT raw_data, api_endpoint, api_response_code, validation_status FROM bronze.fred_gdp"
                    " WHERE record_number = 1")[0]
    assert row[0] == {"series_id": "GDP", "realtime_start": "2024-10-30", "realtime_end": "2024-10-30",
                      "date": "1946-01-01", "value": "."}
    assert row[1].startswith(api.url + FRED_PATH) and "series_id=GDP" in row[1] and "api_key" not in row[1]
    assert row[2:] == (200, "valid")
    assert query(db, "SELECT status, trigger, rows_total FROM ops.pipeline_runs") == [("success", "api", 315)]
    # The key was sent to the API, and only there.
    assert api.hits(FRED_PATH)[0][1]["api_key"] == [KEY]
    cursor = query(db, "SELECT cursor FROM ops.poll_state WHERE source = 'fred_gdp'")[0][0]
    assert cursor == {"GDP": "2024-07-01"}

    second = poll_once(config_path, env, tmp_path, "fred_gdp")
    assert second.returncode == 0
    # The cursor asks from the last date minus the look-back window.
    expected = (date(2024, 7, 1) - timedelta(days=400)).isoformat()
    assert api.hits(FRED_PATH)[1][1]["observation_start"] == [expected]
    wait_for(lambda: finished(db, "fred_gdp") == 2)
    assert query(db, "SELECT count(*) FROM bronze.fred_gdp") == [(315,)]
    assert query(db, "SELECT status FROM ops.pipeline_runs ORDER BY started_at") == [("success",), ("skipped",)]
    assert_key_nowhere(db, tmp_path)


def test_valet_observations_load_253_rows_from_a_stored_payload(poller_config, env, consumer, db, api, tmp_path):
    config_path = poller_config()
    consumer(config_path)
    assert poll_once(config_path, env, tmp_path, "boc_fx").returncode == 0
    wait_for(lambda: finished(db, "boc_fx") == 1)
    assert query(db, "SELECT count(*), count(*) FILTER (WHERE validation_status = 'valid') FROM bronze.boc_fx") == [
        (253, 253)]
    # 435,701 bytes: above the inline limit, so the body travelled as a file under _payloads/.
    stored = query(db, "SELECT DISTINCT file_path FROM bronze.boc_fx")[0][0]
    assert stored.startswith("_payloads/boc_fx/")
    assert list((tmp_path / "data_lake" / "_archive" / "boc_fx").rglob("*.json"))
    assert query(db, "SELECT cursor FROM ops.poll_state WHERE source = 'boc_fx'") == [({"last_date": "2024-12-31"},)]
    poll_once(config_path, env, tmp_path, "boc_fx")
    assert api.hits(VALET_PATH)[1][1]["start_date"] == [(date(2024, 12, 31) - timedelta(days=7)).isoformat()]


def test_500_three_times_then_200_is_a_success(poller_config, env, consumer, db, api, tmp_path):
    config_path = poller_config()
    consumer(config_path)
    api.script[FRED_PATH].extend([("status", 500)] * 3)
    result = poll_once(config_path, env, tmp_path, "fred_gdp")
    assert result.returncode == 0, result.stderr
    assert len(api.hits(FRED_PATH)) == 4
    wait_for(lambda: finished(db, "fred_gdp") == 1)
    assert query(db, "SELECT status FROM ops.pipeline_runs") == [("success",)]


def test_500_for_ever_is_an_api_error_failure(poller_config, env, db, api, tmp_path):
    config_path = poller_config(poller_extra="max_attempts = 3")
    config_path.write_text(config_path.read_text().replace("max_attempts = 5\n", ""))
    api.script[FRED_PATH].extend([("status", 500)] * 10)
    result = poll_once(config_path, env, tmp_path, "fred_gdp")
    assert result.returncode == 1
    assert len(api.hits(FRED_PATH)) == 3
    runs = query(db, "SELECT status, reason, error_summary, trigger FROM ops.pipeline_runs")
    assert len(runs) == 1 and runs[0][:2] == ("failure", "api_error") and runs[0][3] == "api"
    assert "HTTP 500" in runs[0][2] and "3 attempt" in runs[0][2] and "scripted failure" in runs[0][2]
    assert query(db, "SELECT last_status LIKE 'failure%%' FROM ops.poll_state") == [(True,)]
    assert_key_nowhere(db, tmp_path)


def test_429_retry_after_is_honoured(poller_config, env, consumer, db, api, tmp_path):
    config_path = poller_config()
    api.script[FRED_PATH].append(("status", 429, {"Retry-After": "2"}))
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 0
    hits = api.hits(FRED_PATH)
    assert len(hits) == 2 and hits[1][3] - hits[0][3] >= 1.9


def test_timeout_and_truncated_body_are_retried(poller_config, env, db, api, tmp_path):
    config_path = poller_config()
    api.script[FRED_PATH].extend([("sleep", 2.5), ("truncated",)])
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 0
    assert len(api.hits(FRED_PATH)) == 3


@pytest.mark.parametrize("behaviour,expected", [(("html",), "not JSON"), (("status", 404), "HTTP 404"),
                                                (("status", 400), "HTTP 400")])
def test_wrong_shape_and_4xx_are_not_retried(poller_config, env, db, api, tmp_path, behaviour, expected):
    config_path = poller_config()
    api.script[FRED_PATH].append(behaviour)
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 1
    assert len(api.hits(FRED_PATH)) == 1
    assert expected in query(db, "SELECT error_summary FROM ops.pipeline_runs")[0][0]


def test_missing_records_array_is_an_api_error_saying_what_was_wrong(poller_config, env, db, api, tmp_path):
    config_path = poller_config()
    api.routes[FRED_PATH] = b'{"count": 0, "notes": "no observations key here"}'
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 1
    assert "no array at 'observations'" in query(db, "SELECT error_summary FROM ops.pipeline_runs")[0][0]


def test_missing_api_key_is_reported_not_sent(poller_config, db, api, tmp_path):
    config_path = poller_config()
    env = {k: v for k, v in os.environ.items() if k != "FRED_API_KEY"}
    result = poll_once(config_path, env, tmp_path, "fred_gdp")
    assert result.returncode == 1 and api.hits(FRED_PATH) == []
    assert "FRED_API_KEY" in query(db, "SELECT error_summary FROM ops.pipeline_runs")[0][0]


def test_long_running_poller_survives_failures_and_recovers(poller_config, env, consumer, db, api, tmp_path):
    config_path = poller_config(poller_extra="max_attempts = 1")
    config_path.write_text(config_path.read_text().replace("max_attempts = 5\n", "")
                           .replace('interval = "1h"', 'interval = "1s"'))
    api.script[FRED_PATH].extend([("status", 503)] * 2)
    consumer(config_path)
    log = open(tmp_path / "poll.log", "wb")
    proc = subprocess.Popen(ingestd_cmd("--config", str(config_path), "poll"), stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE source = 'fred_gdp'"
                                   " AND status = 'success'")[0][0] == 1, timeout=60)
        assert proc.poll() is None
        failures = query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE reason = 'api_error'")[0][0]
        assert failures == 2
        assert query(db, "SELECT count(*) FROM bronze.boc_fx") == [(253,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert_key_nowhere(db, tmp_path)


def test_dead_lettered_payload_is_replayed_without_calling_the_api(poller_config, env, consumer, db, api, tmp_path,
                                                                   write_config):
    config_path = poller_config()
    # A schema that rejects everything: the payload is dead-lettered (schema_rejected).
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"type": "object", "required": ["never_there"]}))
    text = config_path.read_text()
    config_path.write_text(text.replace(f"{REPO_SCHEMAS}/fred_observation.json", str(strict)))
    consumer(config_path)
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 0
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 1)
    assert query(db, "SELECT reason FROM ops.dead_letters") == [("schema_rejected",)]
    calls = len(api.hits(FRED_PATH))
    config_path.write_text(text)  # the fix: the right schema (the running consumer reloads it)
    time.sleep(0.05)
    replay = subprocess.run(ingestd_cmd("--config", str(config_path), "dlq", "replay", "--all", "--json"),
                            capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(replay.stdout)["loaded"] == 1, replay.stderr
    assert len(api.hits(FRED_PATH)) == calls
    assert query(db, "SELECT count(*) FROM bronze.fred_gdp") == [(315,)]


def test_next_day_poll_loads_only_the_revised_observation(poller_config, env, consumer, db, api, tmp_path):
    config_path = poller_config()
    consumer(config_path)
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 0
    wait_for(lambda: finished(db, "fred_gdp") == 1)
    # The next day FRED answers with new realtime dates on every observation,
    # and one recent value revised.
    doc = json.loads(GDP.read_bytes())
    for observation in doc["observations"]:
        observation["realtime_start"] = observation["realtime_end"] = "2024-10-31"
    doc["observations"][-1]["value"] = "29400.123"
    revised_date = doc["observations"][-1]["date"]
    api.routes[FRED_PATH] = json.dumps(doc).encode()
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 0
    wait_for(lambda: finished(db, "fred_gdp") == 2)
    assert query(db, "SELECT count(*) FROM bronze.fred_gdp") == [(316,)]
    history = query(db, "SELECT raw_data->>'value', record_number FROM bronze.fred_gdp"
                        " WHERE raw_data->>'date' = %s ORDER BY id", (revised_date,))
    assert len(history) == 2 and history[1] == ("29400.123", 315) and history[0][0] != "29400.123"
    second_run = query(db, "SELECT status, rows_total, error_summary FROM ops.pipeline_runs ORDER BY started_at")[1]
    assert second_run[:2] == ("success", 1) and "314 of 315 observations unchanged" in second_run[2]


def test_requests_to_one_provider_keep_their_minimum_interval(poller_config, env, db, api, tmp_path):
    config_path = poller_config(poller_extra="min_request_interval = {fred = 0.4}")
    config_path.write_text(config_path.read_text().replace('series = ["GDP"]', 'series = ["GDP", "GNPCA", "PAYEMS"]'))
    assert poll_once(config_path, env, tmp_path, "fred_gdp").returncode == 0
    times = [hit[3] for hit in api.hits(FRED_PATH)]
    assert [hit[1]["series_id"] for hit in api.hits(FRED_PATH)] == [["GDP"], ["GNPCA"], ["PAYEMS"]]
    assert all(later - earlier >= 0.39 for earlier, later in zip(times, times[1:]))
    cursor = query(db, "SELECT cursor FROM ops.poll_state")[0][0]
    assert set(cursor) == {"GDP", "GNPCA", "PAYEMS"}


def test_generic_json_api_with_header_auth(write_config, db, api, tmp_path):
    token = "Bearer tok-9f8e7d6c5b4a39281706"
    api.routes["/v2/items"] = json.dumps({"data": {"items": [{"id": 1, "x": "a"}, {"id": 2, "x": "b"}]}}).encode()
    config_path = write_config(extra="[poller]\nretry_base_seconds = 0.05\n", sources=f"""
[[sources]]
name = "items_api"
kind = "api"
provider = "http_json"
url = "{api.url}/v2/items"
params = {{page_size = 100}}
records_path = "data.items"
headers_env = {{Authorization = "ITEMS_TOKEN"}}
record_key = ["id"]
""")
    env = {**os.environ, "ITEMS_TOKEN": token}
    daemon = subprocess.Popen(ingestd_cmd("--config", str(config_path), "run"), stdout=open(tmp_path / "run.log", "wb"),
                              stderr=subprocess.STDOUT, env=env)
    try:
        # `ingestd run` includes the poller when API sources are configured.
        wait_for(lambda: query(db, "SELECT to_regclass('bronze.items_api')")[0][0] is not None
                 and query(db, "SELECT count(*) FROM bronze.items_api")[0][0] == 2, timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    hit = api.hits("/v2/items")[0]
    assert hit[2]["Authorization"] == token and hit[1]["page_size"] == ["100"]
    assert query(db, "SELECT raw_data FROM bronze.items_api ORDER BY record_number") == [
        ({"id": 1, "x": "a"},), ({"id": 2, "x": "b"},)]
    status = json.loads(subprocess.run(ingestd_cmd("--config", str(config_path), "status", "--json"),
                                       capture_output=True, text=True, env=env, timeout=60).stdout)
    poller = status["pollers"][0]
    assert poller["source"] == "items_api" and poller["last_status"] == "success" and poller["next_poll_at"]
    assert token not in (tmp_path / "run.log").read_text()
    dump = query(db, "SELECT string_agg(t::text, ' ') FROM ops.pipeline_runs t")[0][0]
    assert "tok-9f8e" not in dump
