"""Each API provider on its own: the requests of a poll, the check of an
answer (on recorded and sample answers, tests/data/README.md), record identities and
cursors. No HTTP, no broker, no database."""
from pathlib import Path

import pytest

from ingestd.daemon.config import build_config
from ingestd.daemon.errors import PermanentError
from ingestd.daemon.providers import PROVIDERS, provider_for

from .conftest import SHARED_DATA

KEY = "k3y-0f-test-9f8e7d"


def source(**keys):
    doc = {"sources": [{"name": "api_source", "kind": "api", **keys}]}
    return build_config(doc, Path("/tmp"), environ={}).sources["api_source"]


def test_every_provider_is_registered_under_its_name():
    assert sorted(PROVIDERS) == ["fred", "http_json", "valet"]
    assert all(cls.name == name for name, cls in PROVIDERS.items())


def test_fred_asks_per_series_from_the_cursor_less_the_lookback_and_hides_the_key():
    fred = provider_for(source(provider="fred", series=["GDP", "UNRATE"], api_key_env="FRED_KEY", lookback_days=30,
                               base_url="http://127.0.0.1:9/"))
    requests = fred.requests({"GDP": "2024-04-01"}, {"FRED_KEY": KEY})
    assert [r.context for r in requests] == [{"series_id": "GDP"}, {"series_id": "UNRATE"}]
    assert [r.cursor_key for r in requests] == ["GDP", "UNRATE"]
    gdp, unrate = requests
    assert gdp.url.startswith("http://127.0.0.1:9/fred/series/observations?series_id=GDP&file_type=json"
                              "&observation_start=2024-03-02")
    assert f"api_key={KEY}" in gdp.url and KEY not in gdp.endpoint and "api_key" not in gdp.endpoint
    assert "observation_start" not in unrate.url  # no cursor yet, no start_date: everything
    assert fred.secrets({"FRED_KEY": KEY}) == (KEY,)


def test_fred_without_its_key_in_the_environment_is_an_api_error_naming_the_variable():
    fred = provider_for(source(provider="fred", series=["GDP"], api_key_env="FRED_KEY"))
    with pytest.raises(PermanentError) as caught:
        fred.requests({}, {})
    assert caught.value.reason == "api_error" and "FRED_KEY" in str(caught.value)


def test_fred_answer_of_record_gives_its_observations_identities_and_cursor():
    fred = provider_for(source(provider="fred", series=["GDP"]))
    body = (SHARED_DATA / "fred" / "pyfredapi_series_observations_GDP.json").read_bytes()
    records = fred.check_answer(body)
    assert len(records) == 315 and sum(r["value"] == "." for r in records) == 4
    request = fred.requests({}, {})[0]
    first = dict(records[0], series_id="GDP")
    assert fred.identity(first) == (f"GDP|{first['date']}", first["value"])
    assert fred.identity({"value": "1"}) is None  # no date: no identity, always loaded
    cursor = fred.advance_cursor(request, records, {"GDP": "1900-01-01"})
    assert cursor == {"GDP": max(r["date"] for r in records)}
    assert fred.advance_cursor(request, [], {"GDP": "2020-01-01"}) == {"GDP": "2020-01-01"}


def test_valet_asks_for_series_or_a_group_from_the_start_date():
    series = provider_for(source(provider="valet", series=["FXUSDCAD", "FXEURCAD"], start_date="2024-01-01",
                                 lookback_days=7))
    (request,) = series.requests({"last_date": "2024-03-10"}, {})
    assert request.url == ("https://www.bankofcanada.ca/valet/observations/FXUSDCAD,FXEURCAD/json"
                           "?start_date=2024-03-03")
    (early,) = series.requests({"last_date": "2024-01-03"}, {})
    assert early.url.endswith("?start_date=2024-01-01")  # never before start_date
    group = provider_for(source(provider="valet", group="FX_RATES_DAILY"))
    assert group.requests({}, {})[0].url == "https://www.bankofcanada.ca/valet/observations/group/FX_RATES_DAILY/json"


def test_valet_answer_of_record_gives_one_record_per_date_identified_by_date_and_values():
    valet = provider_for(source(provider="valet", series=["FXUSDCAD"]))
    body = (SHARED_DATA / "boc" / "valet_observations_26FX_2024.raw.json").read_bytes()
    records = valet.check_answer(body)
    assert records and all(isinstance(r.get("d"), str) for r in records)
    key, fingerprint = valet.identity(records[0])
    assert key == records[0]["d"]
    revised = {**records[0], "FXUSDCAD": {"v": "9.9999"}}
    assert valet.identity(revised) == (key, valet.identity(revised)[1]) != (key, fingerprint)
    cursor = valet.advance_cursor(valet.requests({}, {})[0], records, {})
    assert cursor == {"last_date": max(r["d"] for r in records)}


def test_http_json_sends_params_and_secret_headers_and_identifies_by_record_key():
    generic = provider_for(source(provider="http_json", url="https://api.example.test/v1/items?fixed=1",
                                  records_path="data.items", params={"limit": 100, "active": True},
                                  headers_env={"Authorization": "EXAMPLE_TOKEN"}, record_key=["id"]))
    (request,) = generic.requests({}, {"EXAMPLE_TOKEN": f"Bearer {KEY}"})
    assert request.url == "https://api.example.test/v1/items?fixed=1&active=True&limit=100"
    assert request.headers == {"Authorization": f"Bearer {KEY}"}
    assert generic.secrets({"EXAMPLE_TOKEN": KEY}) == (KEY,)
    assert generic.check_answer(b'{"data": {"items": [{"id": 1, "v": "a"}]}}') == [{"id": 1, "v": "a"}]
    assert generic.identity({"id": 1, "v": "a"})[0] == "1"
    assert generic.identity({"v": "a"}) is None
    assert generic.advance_cursor(request, [{"id": 2}], {"x": 1}) == {"x": 1}  # no cursor
    with pytest.raises(PermanentError, match="EXAMPLE_TOKEN"):
        generic.requests({}, {})


@pytest.mark.parametrize("body, message", [
    (b"<html>busy</html>", "not JSON"),
    (b'{"observations": {"a": 1}}', "no array at 'observations'"),
    (b'{"observations": [{"d": "2024-01-01"}, 7]}', "record 2 of the response is not an object"),
    (b"\xff\xfe", "not JSON"),
])
def test_an_answer_of_the_wrong_shape_is_an_api_error_saying_what_is_wrong(body, message):
    valet = provider_for(source(provider="valet", group="G"))
    with pytest.raises(PermanentError) as caught:
        valet.check_answer(body)
    assert caught.value.reason == "api_error" and message in str(caught.value)


def test_a_providers_keys_are_checked_with_the_config():
    from ingestd.daemon.errors import ConfigError

    with pytest.raises(ConfigError, match="series"):
        source(provider="fred")
    with pytest.raises(ConfigError, match="url"):
        source(provider="http_json", records_path="items")
    with pytest.raises(ConfigError, match="provider"):
        source(provider="nonesuch")
