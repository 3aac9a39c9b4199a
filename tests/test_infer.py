"""ingestd infer-schema: a proposal always accepts the sample it came from,
as the project's own validator (RecordValidator) judges it. None of these
needs a server. INGESTD_TEST_EXAMPLES sets how many generated samples (150
by default)."""
import json
import os
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.consumers.infer import infer_schema
from ingestd.consumers.validation import RecordValidator

from .conftest import ingestd_cmd

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))

# Texts near the shapes infer-schema proposes, on both sides of each.
TEXTS = ["0", "-12", "007", "1.5", "-0.25", "1e5", "1.5E-3", ".5", "5.", "1,5", "١٢", "１２", "12\n", " 12", "+1",
         "2020-02-29", "2020-02-30", "2021-02-29", "2020-13-01", "0000-01-01", "2020-1-1", "2020-01-01\n",
         "2020-01-01T00:00:00Z", "2020-01-01t00:00:00z", "2020-01-01T25:61:00Z", "2020-02-30T00:00:00Z",
         "2020-01-01T00:00:60Z", "2020-01-01T00:00:00.123+05:30", "2020-01-01T00:00:00+24:00",
         "2020-01-01T00:00:00", "2020-01-01 00:00:00Z", "4/12/2016", "13/45/2016", "4/12/16",
         "4/12/2016 1:00:00 AM", "4/12/2016 99:99:99 PM", "4/12/2016 1:00:00 am", "", " ", "x", "NaN", "null",
         "true", "é", "\u2028", "a\nb"]

texts = st.one_of(st.sampled_from(TEXTS), st.text(max_size=12))
scalars = st.one_of(texts, st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False), st.sampled_from([0.0, -0.0, 1.0, 1e300, 2.5]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                      max_leaves=6)
KEYS = ["Id", "date", "n", "", "$ref", "a b", "é"]
json_records = st.lists(st.one_of(st.dictionaries(st.sampled_from(KEYS), values, max_size=5), values),
                        min_size=1, max_size=20)


@st.composite
def csv_records(draw):
    """Records as a CSV reader gives them: the same keys, every value text,
    each column mostly of one shape."""
    columns = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True))
    shapes = {c: draw(st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3)) for c in columns}
    rows = draw(st.integers(1, 15))
    return [{c: draw(st.one_of(st.sampled_from(shapes[c]), texts)) for c in columns} for _ in range(rows)]


def accepts_its_sample(records):
    schema = infer_schema(records, "sample")
    validator = RecordValidator(schema, "inferred")
    assert validator.plan.fast, validator.plan
    for record in records:
        assert validator.errors(record) is None, (json.dumps(schema, ensure_ascii=False), record)
        assert validator._reference.is_valid(record), (schema, record)  # the reference agrees


SETTINGS = settings(max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(json_records)
def test_a_proposal_accepts_every_record_of_its_json_sample(records):
    accepts_its_sample(records)


@SETTINGS
@given(csv_records())
def test_a_proposal_accepts_every_record_of_its_csv_sample(records):
    accepts_its_sample(records)


def test_impossible_dates_and_times_are_not_proposed_as_formats():
    sample = [{"day": "2020-01-01", "at": "2020-01-01T00:00:00Z"}, {"day": "2020-02-30", "at": "2020-01-01T25:61:00Z"}]
    schema = infer_schema(sample)
    assert "format" not in json.dumps(schema)
    accepts_its_sample(sample)
    good = infer_schema(sample[:1])
    assert good["properties"]["day"]["format"] == "date" and good["properties"]["at"]["format"] == "date-time"
    assert RecordValidator(good).errors({"day": "2020-02-30", "at": "2020-01-01T00:00:00Z"})


def test_a_sample_with_records_that_are_not_objects_is_accepted_too():
    accepts_its_sample([{"a": 1}, [1, 2], "text", 3.5, None])
    accepts_its_sample([1, 2])


def test_infer_schema_then_validate_the_same_file_finds_nothing_invalid(tmp_path):
    sample = tmp_path / "sample.csv"
    lines = ["Id,ActivityDate,When,Total,Note"]
    for i in range(50):
        day = "2020-02-30" if i == 17 else f"2020-01-{i % 28 + 1:02d}"
        when = "2020-01-01T25:61:00Z" if i == 33 else f"2020-01-01T{i % 24:02d}:00:00Z"
        lines.append(f"{1503960366 + i},{day},{when},{i * 1.5},{'' if i % 7 else 'x'}")
    sample.write_text("\r\n".join(lines) + "\r\n")
    inferred = subprocess.run(ingestd_cmd("infer-schema", str(sample)), capture_output=True, text=True, timeout=120)
    assert inferred.returncode == 0, inferred.stderr
    (tmp_path / "sample.json").write_text(inferred.stdout)
    config = tmp_path / "ingestd.toml"
    config.write_text(f'[landing]\ndir = "{tmp_path / "data_lake"}"\n[[sources]]\nname = "sample"\nformat = "csv"\n'
                      f'schema = "{tmp_path / "sample.json"}"\n')
    checked = subprocess.run(ingestd_cmd("--config", str(config), "validate", "--source", "sample", str(sample)),
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "50 record(s), 50 valid, 0 invalid" in checked.stdout
    assert "fast path" in checked.stdout
