"""``format`` under format_keyword = "assert": every format that draft 7 and
draft 2020-12 define is really checked, with jsonschema's verdict, on the
compiled path and on the reference path; a format that cannot be checked
(an unknown name, or a check whose package is missing) refuses the config
at load, naming the format and what to do. None of these needs a server."""
import json
import subprocess
import sys

import jsonschema
import pytest

from ingestd.consumers.validation import RecordValidator, plan_for
from ingestd.records.dialect import (
    FORMAT_PACKAGES,
    SchemaError,
    format_checker,
    unassertable_formats,
    validator_class,
)

from .conftest import ingestd_cmd

DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"

# Every format keyword of draft 7 and of draft 2020-12: a value that is one,
# and values that are not.
FORMAT_CASES = {
    "date-time": ("2020-01-01T00:00:00Z", ["garbage", "2020-02-30T00:00:00Z", "2020-01-01T25:61:00Z"]),
    "date": ("2020-02-29", ["garbage", "2020-02-30", "2021-02-29"]),
    "time": ("12:30:00Z", ["garbage", "25:61:00Z"]),
    "duration": ("P3DT4H", ["garbage", "3 days", "PT"]),
    "email": ("a@example.com", ["garbage"]),
    "idn-email": ("é@example.com", ["garbage"]),
    "hostname": ("example.com", ["garbage!", "-x-.com"]),
    "idn-hostname": ("bücher.example", ["garbage!", "a..b"]),
    "ipv4": ("192.168.0.1", ["256.1.1.1", "garbage"]),
    "ipv6": ("::1", ["1:::1", "garbage"]),
    "uri": ("https://example.com/a?b#c", ["garbage", "/relative"]),
    "uri-reference": ("../a?b#c", ["a b", "http://[::1"]),
    "iri": ("https://例え.jp/é", ["garbage", "a b"]),
    "iri-reference": ("../é?b", ["a b", "http://[::1"]),
    "uuid": ("123e4567-e89b-12d3-a456-426614174000", ["garbage", "123e4567e89b12d3a456426614174000"]),
    "uri-template": ("https://x/{id}", ["https://x/{id", "{a b}"]),
    "json-pointer": ("/a/b~0", ["a/b", "/a~2"]),
    "relative-json-pointer": ("0/a", ["/a", "garbage", "²2"]),
    "regex": ("^\\p{Letter}+$", ["[", "(?P<x>a)"]),
}
# Defined by draft 2019-09 and later only; a draft 7 schema that uses them
# gets the same check.
LATER = {"duration", "uuid"}
CASES = [(draft, name) for draft in (DRAFT7, DRAFT2020) for name in FORMAT_CASES]


def paths(draft, name):
    """The same format check on the compiled path and on the reference path
    (multipleOf sends a schema to jsonschema)."""
    fast = RecordValidator({"$schema": draft, "type": "object", "properties": {"v": {"format": name}}}, "fast")
    slow = RecordValidator({"$schema": draft, "type": "object", "properties": {"v": {"format": name}},
                            "multipleOf": 1}, "slow")
    assert fast.plan.fast and not slow.plan.fast
    return fast, slow


# Checked only where rfc3987-syntax is installed, which ingestd does not
# require (1.5 s more at every start); refused under assert elsewhere.
OPTIONAL = {"iri": "rfc3987-syntax", "iri-reference": "rfc3987-syntax"}


@pytest.mark.parametrize("draft,name", CASES, ids=[f"{'7' if d == DRAFT7 else '2020-12'}-{n}" for d, n in CASES])
def test_every_format_is_checked_on_both_paths_or_refused(draft, name):
    """Asserted, a format is checked with jsonschema's check; the optional
    ones without their package are refused, naming it."""
    schema = {"$schema": draft, "type": "object", "properties": {"v": {"format": name}}}
    if name in OPTIONAL and name not in format_checker(validator_class(schema)).checkers:
        problems = unassertable_formats(schema)
        assert len(problems) == 1 and f'"{name}"' in problems[0] and OPTIONAL[name] in problems[0], problems
        with pytest.raises(SchemaError, match=OPTIONAL[name]):
            RecordValidator(schema, "refused")
        assert RecordValidator(schema, "annotated", "annotate").errors({"v": "garbage"}) is None
        return
    assert name in OPTIONAL or not unassertable_formats(schema)
    good, bads = FORMAT_CASES[name]
    for validator in paths(draft, name):
        assert validator.errors({"v": good}) is None, (name, good)
        assert validator.errors({"v": 5}) is None  # format applies to strings only
        for bad in bads:
            errors = validator.errors({"v": bad})
            assert errors and errors[0]["keyword"] == "format" and name in errors[0]["message"], (name, bad, errors)
    plain = jsonschema.validators.validator_for({"$schema": draft})
    if not (draft == DRAFT7 and name in LATER):
        # The installed jsonschema itself (not only ingestd's copy of its
        # checks) checks the format: its optional packages are dependencies.
        assert name in plain.FORMAT_CHECKER.checkers
    if not (draft == DRAFT7 and name in LATER) and name != "regex":  # regex: ECMA-262 for ingestd, re for it
        assert plain.FORMAT_CHECKER.conforms(good, name)
        assert not any(plain.FORMAT_CHECKER.conforms(bad, name) for bad in bads if bad != "²2")


def test_the_issue_example_garbage_is_not_a_date_time():
    validator = RecordValidator({"properties": {"t": {"format": "date-time"}}}, "issue")
    assert validator.errors({"t": "garbage"}) is not None
    assert validator.errors({"t": "2016-04-12T00:00:00Z"}) is None


def test_the_compiled_path_never_answers_with_fastjsonschemas_own_format_regexes():
    import fastjsonschema

    from ingestd.consumers.compiled import fast_formats
    formats = fast_formats(format_checker(jsonschema.Draft202012Validator))
    for generator in (fastjsonschema.CodeGeneratorDraft07, fastjsonschema.CodeGeneratorDraft2019):
        assert set(generator.FORMAT_REGEXS) | {"regex"} <= set(formats)
    assert set(FORMAT_CASES) - set(OPTIONAL) <= set(formats)
    # fastjsonschema's email regex refuses "a@b"; jsonschema's check (an "@") does not.
    assert RecordValidator({"$schema": DRAFT7, "format": "email"}).errors("a@b") is None


@pytest.mark.parametrize("mode", ["assert", "annotate"])
def test_an_unknown_format_is_refused_under_assert_and_fine_under_annotate(mode):
    schema = {"type": "object", "properties": {"x": {"format": "my-thing"}, "format": {"type": "string"}},
              "default": {"format": "not-a-schema"}, "examples": [{"format": "data"}]}
    problems = unassertable_formats(schema, mode)
    if mode == "annotate":
        assert problems == []
        assert RecordValidator(schema, "s", mode).errors({"x": "anything"}) is None
        return
    assert len(problems) == 1 and "/properties/x/format" in problems[0] and "my-thing" in problems[0]
    assert 'format_keyword = "annotate"' in problems[0]
    with pytest.raises(SchemaError, match="my-thing"):
        RecordValidator(schema, "s", mode)


def test_a_format_whose_check_is_not_installed_is_refused_naming_the_package():
    checker = format_checker(jsonschema.Draft202012Validator)
    del checker.checkers["date-time"]
    problems = unassertable_formats({"items": {"format": "date-time"}}, "assert", checker)
    assert problems and "date-time" in problems[0] and "rfc3339-validator" in problems[0]
    assert 'format_keyword = "annotate"' in problems[0] and "/items/format" in problems[0]
    assert set(FORMAT_PACKAGES) <= set(FORMAT_CASES)


def write_source(tmp_path, schema, extra=""):
    """An ingestd.toml with one jsonl source ``orders`` of ``schema``."""
    (tmp_path / "orders.json").write_text(json.dumps(schema))
    path = tmp_path / "ingestd.toml"
    path.write_text(f'[landing]\ndir = "{tmp_path / "data_lake"}"\n[[sources]]\nname = "orders"\nformat = "jsonl"\n'
                    f'schema = "{tmp_path / "orders.json"}"\nmax_invalid_ratio = 1.0\n{extra}\n')
    return path


def validate(config, *files, blocked=()):
    """``ingestd validate`` in a child process in which the modules
    ``blocked`` cannot be imported (as if their package were not installed)."""
    prelude = "import sys, runpy\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    command = ingestd_cmd("--config", str(config), "validate", "--source", "orders", *map(str, files))
    if blocked:
        command = [sys.executable, "-c", prelude + "runpy.run_module('ingestd.daemon', run_name='__main__')",
                   *command[3:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_validate_finds_a_garbage_date_time_and_names_the_formats_it_asserts(tmp_path):
    config = write_source(tmp_path, {"type": "object", "properties": {"t": {"format": "date-time"},
                                                                      "h": {"format": "hostname"}}})
    sample = tmp_path / "o.jsonl"
    sample.write_text('{"t": "garbage", "h": "example.com"}\n{"t": "2020-01-01T00:00:00Z", "h": "-x-"}\n')
    result = validate(config, sample)
    assert "2 record(s), 0 valid, 2 invalid" in result.stdout, result.stdout + result.stderr
    assert "'garbage' is not a 'date-time'" in result.stdout and "'-x-' is not a 'hostname'" in result.stdout
    assert "format asserted (date-time, hostname)" in result.stdout


def test_without_a_formats_package_the_config_is_refused_naming_format_and_package(tmp_path):
    config = write_source(tmp_path, {"type": "object", "properties": {"t": {"format": "date-time"}}})
    sample = tmp_path / "o.jsonl"
    sample.write_text('{"t": "garbage"}\n')
    refused = validate(config, sample, blocked=["rfc3339_validator"])
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "sources[orders].schema" in refused.stderr and '"date-time"' in refused.stderr
    assert "rfc3339-validator" in refused.stderr and 'format_keyword = "annotate"' in refused.stderr
    assert "Traceback" not in refused.stderr
    config = write_source(tmp_path, {"type": "object", "properties": {"t": {"format": "date-time"}}},
                          'format_keyword = "annotate"')
    annotated = validate(config, sample, blocked=["rfc3339_validator"])
    assert annotated.returncode == 0 and "1 valid, 0 invalid" in annotated.stdout, annotated.stdout + annotated.stderr
    assert "format annotation only (date-time)" in annotated.stdout


def test_an_unknown_format_refuses_the_config_at_load(tmp_path):
    from ingestd.daemon.config import ConfigError, load_config
    schema = {"$schema": DRAFT7, "type": "object", "properties": {"x": {"format": "my-thing"}}}
    with pytest.raises(ConfigError, match="my-thing") as info:
        load_config(write_source(tmp_path, schema))
    assert "sources[orders].schema" in str(info.value) and "/properties/x/format" in str(info.value)
    assert load_config(write_source(tmp_path, schema, 'format_keyword = "annotate"')).sources["orders"]


def test_the_plan_names_the_formats_it_asserts():
    schema = {"properties": {"a": {"format": "uuid"}, "b": {"anyOf": [{"format": "date"}, {"const": ""}]}}}
    assert "format asserted (date, uuid)" in plan_for(schema).describe()
    assert "format annotation only (date, uuid)" in plan_for(schema, "annotate").describe()
    assert "format asserted (none in the schema)" in plan_for({"type": "object"}).describe()


# Formats whose grammar has no blank nor control character anywhere; the
# others (json-pointer, relative-json-pointer, regex) may hold any character
# ("/a\n" is a JSON pointer to the member "a\n").
NO_BLANKS = sorted(set(FORMAT_CASES) - {"json-pointer", "relative-json-pointer", "regex"})
BLANKS = ["\n", "\r\n", "\r", " ", "\t", "\x0b", "\x0c", "\x00", "\x85"]


@pytest.mark.parametrize("name", NO_BLANKS)
def test_a_trailing_newline_or_other_blank_makes_a_value_none_of_these_formats(name):
    """Python's "$" matches before a final newline: jsonschema's date-time,
    time, hostname, uri and uri-reference checks took "<value>\\n". Both
    paths refuse it, and the explanation says which format."""
    good, _ = FORMAT_CASES[name]
    schema = {"$schema": DRAFT2020, "type": "object", "properties": {"v": {"format": name}}}
    if name in format_checker(validator_class(schema)).checkers:
        for validator in paths(DRAFT2020, name):
            assert validator.errors({"v": good}) is None
            for blank in BLANKS:
                for value in (good + blank, blank + good):
                    errors = validator.errors({"v": value})
                    assert errors and errors[0]["keyword"] == "format" and name in errors[0]["message"], \
                        (name, value, errors)


@pytest.mark.parametrize("name", ["json-pointer", "relative-json-pointer", "regex"])
def test_formats_whose_values_may_hold_blanks_keep_them(name):
    value = {"json-pointer": "/a\n", "relative-json-pointer": "0/a b", "regex": "^a b\n$"}[name]
    for validator in paths(DRAFT2020, name):
        assert validator.errors({"v": value}) is None


@pytest.mark.parametrize("email,valid", [("a@example.com", True), ('"a b"@example.com', True),
                                         ("a@example.com\n", False), ("a@example.com ", False),
                                         ("a b@example.com", False), ("a@exa mple.com", False), ("a\t@x.com", False)])
def test_an_email_holds_no_control_character_and_a_space_only_when_quoted(email, valid):
    for name in ("email", "idn-email"):
        for validator in paths(DRAFT2020, name):
            assert (validator.errors({"v": email}) is None) is valid, (name, email)


LEAP = [  # RFC 3339 5.7 and 5.8; the cases of the JSON Schema test suite
    ("date-time", "1990-12-31T23:59:60Z", True), ("date-time", "1990-12-31T15:59:60-08:00", True),
    ("date-time", "1998-12-31T23:59:60.123z", True), ("date-time", "1998-12-31t23:59:60Z", True),
    ("date-time", "1998-12-31T23:59:61Z", False), ("date-time", "1998-12-31T23:58:60Z", False),
    ("date-time", "1998-12-31T22:59:60Z", False), ("date-time", "2020-01-01T00:00:00+24:00", False),
    ("time", "23:59:60Z", True), ("time", "23:59:60+00:00", True), ("time", "01:29:60+01:30", True),
    ("time", "23:29:60+23:30", True), ("time", "15:59:60-08:00", True), ("time", "00:29:60-23:30", True),
    ("time", "22:59:60+00:00", False), ("time", "23:59:60+01:00", False), ("time", "23:59:60+00:30", False),
    ("time", "23:59:60-01:00", False), ("time", "23:59:60-00:30", False), ("time", "12:00:60Z", False),
]


@pytest.mark.parametrize("name,value,valid", LEAP)
def test_a_leap_second_is_a_date_time_and_a_time_where_rfc3339_allows_one(name, value, valid):
    for validator in paths(DRAFT2020, name):
        errors = validator.errors({"v": value})
        assert (errors is None) is valid, (name, value, errors)
        if not valid:
            assert errors[0]["keyword"] == "format" and name in errors[0]["message"]


def test_a_regex_value_too_long_to_compile_is_invalid_not_a_crash(tmp_path):
    """regress overflows its stack on ~80,000 alternatives (the process died with SIGSEGV, and again
    on each redelivery): such a value of format "regex" is refused before it is compiled."""
    config = write_source(tmp_path, {"type": "object", "properties": {"v": {"type": "string", "format": "regex"}}})
    sample = tmp_path / "o.jsonl"
    sample.write_text(json.dumps({"v": "|" * 100_000}) + "\n" + json.dumps({"v": "a|b"}) + "\n")
    result = validate(config, sample)
    assert result.returncode in (0, 1), result.stdout + result.stderr  # not -11
    assert "2 record(s), 1 valid, 1 invalid" in result.stdout, result.stdout + result.stderr


def test_a_schema_pattern_too_long_to_compile_refuses_the_config(tmp_path):
    from ingestd.daemon.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="longer than 4096 characters"):
        load_config(write_source(tmp_path, {"type": "object", "properties": {"v": {"pattern": "|" * 100_000}}}))
