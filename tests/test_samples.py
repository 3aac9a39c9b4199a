"""The sample files ingestd writes (daemon/samples.py) load as the example
sources expect: every row valid against the shipped schemas, the rows the
docs promise, the quirks of the real exports, the same bytes every time."""
import csv
import io
import json

import pytest

from ingestd.consumers.validation import RecordValidator
from ingestd.daemon import samples

from .conftest import FITBIT_FILES, REPO

SCHEMAS = {"dailyActivity_merged.csv": "daily_activity", "sleepDay_merged.csv": "sleep_day",
           "hourlySteps_merged.csv": "hourly_steps", "heartrate_seconds_merged_excerpt.csv": "heart_rate"}


@pytest.mark.parametrize("name", sorted(samples.FITBIT))
def test_each_fitbit_sample_is_valid_against_its_example_schema(name):
    data = samples.FITBIT[name]()
    assert data == samples.FITBIT[name]()  # deterministic: the same bytes every run
    rows = list(csv.DictReader(io.StringIO(data.decode("ascii"), newline="")))
    source = SCHEMAS[name]
    assert len(rows) == FITBIT_FILES[source][1]
    schema = json.loads((REPO / "schemas" / f"{source}.json").read_text())
    validator = RecordValidator(schema, source)
    assert [row for row in rows if validator.errors(row)] == []
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert data.endswith(b"\r\n") == (name != "dailyActivity_merged.csv")


def test_the_samples_carry_the_quirks_that_matter():
    daily = samples.daily_activity().decode()
    assert daily.split("\r\n")[1] == samples.FIRST_DAILY_ROW
    assert any(len(v.split(".")[-1]) == 9 for v in daily.split(",") if "." in v)  # spreadsheet floats
    assert " 12:00:00 AM," in samples.sleep_day().decode() and " PM," in samples.hourly_steps().decode()
    assert samples.spreadsheet_float(1.88) == "1.879999995" and samples.spreadsheet_float(8.5) == "8.5"
    valet = json.loads(samples.valet_observations_json())
    assert len(valet["observations"]) == 253 and valet["observations"][-1]["d"] == "2024-12-31"
    assert len(valet["seriesDetail"]) == 26 and {len(o) for o in valet["observations"]} == {24}
    download = samples.valet_observations_csv()
    assert download.startswith(b"\xef\xbb\xbf\"TERMS AND CONDITIONS\"") and b'"OBSERVATIONS"' in download


def test_the_repositorys_examples_are_the_samples_byte_for_byte():
    """examples/ is what `python -m ingestd.daemon.samples examples` writes."""
    for name, make in samples.FITBIT.items():
        assert (REPO / "examples" / name).read_bytes() == make(), name
