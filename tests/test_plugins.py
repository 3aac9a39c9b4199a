"""A file format and an API provider added in the one place each family
has (records/formats.py, daemon/providers/), with nothing else edited: the
config takes their names and keys, refuses them elsewhere, the reader gets
the format's options and the poller the provider's interval."""
import gzip
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.consumers.ingest import IngestContext, ingest_message
from ingestd.daemon.broker import Publisher, Topology
from ingestd.daemon.config import build_config, config_schema, load_config
from ingestd.daemon.errors import ConfigError, PermanentError
from ingestd.daemon.events import FileEvent
from ingestd.daemon.providers import PROVIDERS, ApiRequest, Provider, provider_for
from ingestd.daemon.providers import register as register_provider
from ingestd.daemon.providers import unregister as unregister_provider
from ingestd.daemon.sources import ApiSource, FileSource
from ingestd.records.formats import FORMATS, Format, format_of, read_records, register, unregister

from .conftest import drop_file, query


def read_pairs(content, options, max_record_bytes, exact_numbers) -> Iterator[tuple[dict, None]]:
    """``key<separator>value`` lines, one record a line; a line without the
    separator is a parse_error naming it."""
    for number, line in enumerate(content, 1):
        text = line.decode().rstrip("\r\n")
        if not text:
            continue
        key, separator, value = text.partition(options["separator"])
        if not separator:
            raise PermanentError("parse_error", f"line {number}: no {options['separator']!r}", line=number)
        yield {"key": key, "value": value}, None


PAIRS = Format("pairs", (".pairs", ".kv"), read_pairs,
               {"separator": {"type": "string", "minLength": 1, "maxLength": 1, "default": "="}})


@pytest.fixture
def pairs_format():
    register(PAIRS)
    try:
        yield PAIRS
    finally:
        unregister("pairs")


def source_of(tmp_path, source: dict):
    return build_config({"sources": [source]}, tmp_path, environ={}).sources[source["name"]]


def refusal(tmp_path, source: dict) -> str:
    with pytest.raises(ConfigError) as info:
        build_config({"sources": [source]}, tmp_path, environ={})
    return str(info.value)


def test_a_registered_format_is_a_source_format_with_its_option_given_to_its_reader(pairs_format, tmp_path):
    (tmp_path / "ingestd.toml").write_text('[[sources]]\nname = "settings"\nformat = "pairs"\nseparator = ":"\n'
                                           '[[sources]]\nname = "plain"\nformat = "pairs"\n')
    config = load_config(tmp_path / "ingestd.toml", environ={})
    source = config.sources["settings"]
    assert isinstance(source, FileSource) and source.options == {"separator": ":"}
    assert config.sources["plain"].options == {"separator": "="}
    path = tmp_path / "a.kv.gz"
    path.write_bytes(gzip.compress(b"colour:blue\n\nsize:a=b\n"))
    assert format_of(path.name) == "pairs"
    records = read_records(path, source.format, config.max_file_bytes, source.options)
    assert list(records) == [({"key": "colour", "value": "blue"}, None), ({"key": "size", "value": "a=b"}, None)]
    with pytest.raises(PermanentError) as info:  # the default separator: no '=' on the first line
        list(read_records(path, "pairs", None, config.sources["plain"].options))
    assert info.value.reason == "parse_error" and "line 1: no '='" in info.value.failure.message


def test_a_format_option_is_refused_on_another_format_and_on_api_sources(pairs_format, tmp_path):
    message = refusal(tmp_path, {"name": "table", "format": "csv", "separator": ":"})
    assert "key 'separator' is not allowed here" in message and "source 'table'" in message
    assert "format 'csv' takes delimiter, skip_lines; 'separator' is an option of format 'pairs'" in message
    message = refusal(tmp_path, {"name": "kv", "format": "pairs", "delimiter": ";"})
    assert "source 'kv': format 'pairs' takes separator; 'delimiter' is an option of format 'csv'" in message
    message = refusal(tmp_path, {"name": "web", "kind": "api", "provider": "http_json", "url": "https://a.example",
                                 "records_path": "x", "separator": ":"})
    assert "source 'web': it belongs to file sources of format 'pairs'" in message
    assert "sources[0].separator: 'ab' is too long" in refusal(tmp_path, {"name": "kv", "format": "pairs",
                                                                             "separator": "ab"})
    with pytest.raises(ValueError, match="takes no option 'delimiter'"):
        list(read_records(tmp_path / "a.kv", "pairs", None, {"delimiter": ";"}))


def test_the_formats_shipped_keep_their_options_and_messages(tmp_path):
    assert source_of(tmp_path, {"name": "t", "format": "csv"}).options == {"delimiter": ",", "skip_lines": 0}
    json_source = source_of(tmp_path, {"name": "j", "format": "json", "records_path": "data.items"})
    assert json_source.options == {"records_path": "data.items"} and json_source.records_path == "data.items"
    assert source_of(tmp_path, {"name": "p", "format": "parquet"}).options == {}
    message = refusal(tmp_path, {"name": "t", "format": "csv", "records_path": "data"})
    assert "sources[0]: key 'records_path' is not allowed here (source 't': format 'csv' takes delimiter" in message
    assert "key 'format' is not allowed here (it belongs to file sources)" in refusal(
        tmp_path, {"name": "f", "kind": "api", "provider": "fred", "series": ["GDP"], "format": "csv"})
    assert "unknown key 'delimter' (did you mean 'delimiter'?)" in refusal(
        tmp_path, {"name": "t", "format": "csv", "delimter": ";"})


def test_unregistered_the_format_is_gone_from_the_config_and_the_suffixes(tmp_path):
    register(PAIRS)
    assert "pairs" in config_schema()["properties"]["sources"]["items"]["properties"]["format"]["enum"]
    unregister("pairs")
    assert "pairs" not in FORMATS and format_of("a.kv") is None
    assert "separator" not in config_schema()["properties"]["sources"]["items"]["properties"]
    assert "sources[0].format: 'pairs' is not one of" in refusal(tmp_path, {"name": "kv", "format": "pairs"})


def test_register_refuses_a_taken_name_suffix_or_option_schema(pairs_format):
    with pytest.raises(ValueError, match="already registered"):
        register(Format("csv", (".tsv",), read_pairs))
    with pytest.raises(ValueError, match="suffix '.kv' is format 'pairs'"):
        register(Format("other", (".kv",), read_pairs))
    with pytest.raises(ValueError, match="option 'separator' is format 'pairs'"):
        register(Format("other", (".other",), read_pairs, {"separator": {"type": "string"}}))
    with pytest.raises(ValueError, match="suffix"):
        Format("other", ("gz",), read_pairs)
    assert set(FORMATS) == {"csv", "json", "jsonl", "parquet", "pairs"}


def test_a_registered_format_loads_into_bronze_with_its_option(pairs_format, write_config, db):
    path = write_config(sources='[[sources]]\nname = "pairs_files"\nformat = "pairs"\nseparator = "|"\n')
    config = load_config(path)
    context = IngestContext(config, Publisher(config.amqp_url, Topology(config.prefix, config.delivery_limit)), "t")
    try:
        drop_file(config.landing_dir, "pairs_files/a.pairs", b"a|1\nb|2=3\n")
        st_ = os.lstat(config.landing_dir / "pairs_files" / "a.pairs")
        event = FileEvent(source="pairs_files", path="pairs_files/a.pairs", size=st_.st_size, mtime_ns=st_.st_mtime_ns,
                          trigger="file")
        outcome = ingest_message(context, event.to_json())
    finally:
        context.close()
    assert (outcome.status, outcome.rows) == ("success", 2)
    assert query(db, "SELECT raw_data FROM bronze.pairs_files ORDER BY record_number") == [
        ({"key": "a", "value": "1"},), ({"key": "b", "value": "2=3"},)]


# format_of as it was written before the registry (a suffix table): the
# registry's answer for the formats shipped must be the same on any name.
def table_format_of(name: str) -> str | None:
    base = name[:-3] if name.endswith(".gz") else name
    for suffix, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                        (".parquet", "parquet")):
        if base.endswith(suffix):
            return fmt
    return None


NAME_PARTS = st.sampled_from([".", "gz", ".gz", "csv", ".csv", "CSV", "json", ".json", "l", "jsonl", ".ndjson",
                              "nd", "parquet", ".parquet", ".kv", "pairs", "a", " ", "é", "\x00", "/"])


@settings(max_examples=300, deadline=None)
@given(name=st.lists(NAME_PARTS, max_size=8).map("".join))
def test_format_of_is_the_suffix_table_for_the_formats_shipped(name):
    assert format_of(name) == table_format_of(name)


@settings(max_examples=200, deadline=None)
@given(stem=st.text(max_size=12), suffix=st.sampled_from(PAIRS.suffixes), gz=st.booleans())
def test_format_of_finds_a_registered_format_by_any_of_its_suffixes(stem, suffix, gz):
    name = stem + suffix + (".gz" if gz else "")
    register(PAIRS)
    try:
        assert format_of(name) == "pairs"
    finally:
        unregister("pairs")
    assert format_of(name) is None


class Example(Provider):
    """One request to ``url``; its records at the top level."""

    name = "example"
    options = {"url": {"type": "string", "pattern": "^https?://"}, "region": {"enum": ["eu", "us"]}}
    required = [["url"]]
    min_request_interval = 1.5

    def requests(self, cursor, environ):
        url = self.settings["url"] + (f"?region={self.settings['region']}" if self.settings.get("region") else "")
        return [ApiRequest(url, url)]


@pytest.fixture
def example_provider():
    register_provider(Example)
    try:
        yield Example
    finally:
        unregister_provider("example")


def test_a_registered_provider_is_a_source_provider_with_its_interval(example_provider, tmp_path):
    (tmp_path / "ingestd.toml").write_text('[[sources]]\nname = "ex"\nkind = "api"\nprovider = "example"\n'
                                           'url = "https://api.example.org/v1"\nregion = "eu"\ninterval = "15m"\n')
    config = load_config(tmp_path / "ingestd.toml", environ={})
    source = config.sources["ex"]
    assert isinstance(source, ApiSource) and source.provider == "example" and source.interval_seconds == 900
    assert dict(source.options) == {"url": "https://api.example.org/v1", "region": "eu"}
    assert config.poller.interval_for("example") == 1.5
    assert dict(config.poller.min_request_interval)["example"] == 1.5
    assert [r.url for r in provider_for(source).requests({}, {})] == ["https://api.example.org/v1?region=eu"]
    overridden = build_config({"poller": {"min_request_interval": {"example": 4}}, "sources": [
        {"name": "ex", "kind": "api", "provider": "example", "url": "https://api.example.org/v1"}]}, tmp_path,
        environ={})
    assert overridden.poller.interval_for("example") == 4.0 and overridden.poller.interval_for("fred") == 0.5


def test_a_registered_providers_keys_are_its_own(example_provider, tmp_path):
    assert "'us'" in refusal(tmp_path, {"name": "ex", "kind": "api", "provider": "example",
                                        "url": "https://a.example", "region": "mars"})
    assert "'url' is a required property" in refusal(tmp_path, {"name": "ex", "kind": "api", "provider": "example"})
    message = refusal(tmp_path, {"name": "f", "kind": "api", "provider": "fred", "series": ["GDP"], "region": "eu"})
    assert "sources[0]: key 'region' is not allowed here (source 'f': provider 'fred' does not take it; it is a " \
           "key of provider 'example')" in message
    with pytest.raises(ConfigError, match="min_request_interval.example"):
        build_config({"poller": {"min_request_interval": {"example": -1}}}, tmp_path, environ={})


def test_unregistered_the_provider_is_refused(tmp_path):
    register_provider(Example)
    with pytest.raises(ValueError, match="already registered"):
        register_provider(Example)
    unregister_provider("example")
    assert "example" not in PROVIDERS
    assert "is not one of" in refusal(tmp_path, {"name": "ex", "kind": "api", "provider": "example",
                                                 "url": "https://a.example"})
    assert "unknown key 'example'" in str(pytest.raises(ConfigError, build_config, {"poller": {
        "min_request_interval": {"example": 1}}}, tmp_path, environ={}).value)
    assert build_config({}, tmp_path, environ={}).poller.interval_for("example") == 0.0


def test_register_refuses_what_is_no_provider():
    class Nameless(Provider):
        name = "Not A Name"

    class Negative(Provider):
        name = "negative"
        min_request_interval = -1.0

    for bad, said in ((Nameless, "provider name"), (Negative, "not >= 0"), (dict, "not a Provider subclass")):
        with pytest.raises(ValueError, match=said):
            register_provider(bad)
    assert set(PROVIDERS) == {"fred", "valet", "http_json"}
