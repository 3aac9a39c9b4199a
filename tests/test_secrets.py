"""Secrets are hidden whole wherever ingestd shows or stores text: passwords
of any characters (quotes, @, :, /, % too) in URLs and DSNs, and every
parameter whose name is secret (logs.is_secret_name) in URLs, tables of
params, events, tables and logs. Through redact() directly, with generated
passwords, and through the real commands."""
import json
import logging
import os
import string
import subprocess

import psycopg2.extensions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.daemon.logs import (
    REDACTED,
    RedactingJsonFormatter,
    RedactingTextFormatter,
    is_secret_name,
    redact,
    redact_url,
)

from .api_server import ApiServer
from .conftest import ingestd_cmd, query
from .test_e2e import wait_for

EXAMPLES = int(os.environ.get("INGESTD_TEST_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)

# The names the review found shown, in the forms it used, and others of the rule.
SECRET_NAMES = ["api_token", "client_secret", "auth", "private_token", "api-key", "sig", "apiToken", "auth_token",
                "key", "token", "access_token", "password", "secret", "apikey", "API_KEY", "X-Api-Key", "APIKey",
                "passwd", "pwd", "signature", "X-Amz-Signature", "credential", "session_id", "sessionId",
                "refresh-token", "Authorization", "client.secret", "api%5Fkey", "sslpassword", "p_w_d"]
PLAIN_NAMES = ["q", "page", "series_id", "file_type", "observation_start", "limit", "signal", "keyword",
               "design", "format", "start_date", "records_path", "sslmode", "host", "dbname", "user"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_secret_name_is_secret_in_every_case_and_separator(name):
    assert is_secret_name(name)
    assert is_secret_name(name.upper()) and is_secret_name(name.lower())


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_a_plain_name_is_not_secret(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize("text,expected", [
    ("amqp://ingestd:pa'ss@rabbit/%2F", "amqp://ingestd:***@rabbit/%2F"),
    ('amqp://ingestd:pa"ss@rabbit/%2F', "amqp://ingestd:***@rabbit/%2F"),
    ("postgresql://postgres:Tr0ub4dor'3@127.0.0.1:5432/db", "postgresql://postgres:***@127.0.0.1:5432/db"),
    ("https://api.example.org/v1?api_token=a1&client_secret=b2&auth=c3&q=kept",
     "https://api.example.org/v1?api_token=***&client_secret=***&auth=***&q=kept"),
    ("GET /v1?private_token=x&api-key=y&sig=z&apiToken=w&auth_token=v HTTP/1.1",
     "GET /v1?private_token=***&api-key=***&sig=***&apiToken=***&auth_token=*** HTTP/1.1"),
    ("https://ghp_Sekr3tT0ken@api.example.org/x", "https://***@api.example.org/x"),
    ("host=db password='it\\'s a b' user=x", "host=db password=*** user=x"),
    ("host=db password=Tr0ub4dor'3 user=x", "host=db password=*** user=x"),
    ("host=db password=a\\ b user=x", "host=db password=*** user=x"),
    ("GET /v1?a=1;token=Sekr3t;b=2", "GET /v1?a=1;token=***"),
])
def test_the_forms_the_review_found_are_hidden_whole(text, expected):
    assert redact(text) == expected
    assert redact_url(text) == expected or " " in text


# Passwords of any printable character: in free text a space ends a URL, so
# there the passwords have none; redact_url (a whole URL) takes them too.
WORD = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8)
PASSWORD = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1,
                   max_size=24) | st.text(alphabet=string.punctuation + "aZ09", min_size=1, max_size=24)
PRINTABLE = st.text(alphabet=string.printable.strip() + " ", min_size=1, max_size=24)
SCHEME = st.sampled_from(["postgresql", "postgres", "amqp", "amqps"])


def formatted(formatter, message: str, **fields) -> str:
    record = logging.LogRecord("ingestd", logging.INFO, __file__, 1, message, None, None)
    record.created = 0.0
    record.__dict__.update(fields)
    return formatter.format(record)


@PROPERTY
@given(scheme=SCHEME, user=WORD, password=PASSWORD, host=WORD, path=WORD)
def test_a_url_password_of_any_characters_is_hidden_whole_in_text_and_logs(scheme, user, password, host, path):
    url, shown = f"{scheme}://{user}:{password}@{host}:5432/{path}", f"{scheme}://{user}:***@{host}:5432/{path}"
    assert redact(url) == shown and redact_url(url) == shown
    assert redact(f"connect to {url} failed: refused") == f"connect to {shown} failed: refused"
    assert redact(f"({url}, '{url}')") == f"({shown}, '{shown}')"
    for formatter in (RedactingJsonFormatter("%(levelname)s %(message)s"), RedactingTextFormatter()):
        assert formatted(formatter, f"cannot reach {url}", database=url, error=f"at {url}: no") == \
            formatted(formatter, f"cannot reach {shown}", database=shown, error=f"at {shown}: no")


@PROPERTY
@given(scheme=SCHEME, user=WORD, password=PRINTABLE, host=WORD)
def test_a_whole_url_hides_a_password_of_any_printable_characters_spaces_too(scheme, user, password, host):
    assert redact_url(f"{scheme}://{user}:{password}@{host}/db") == f"{scheme}://{user}:***@{host}/db"
    cluster = f"amqp://{user}:{password}@{host}:5672/%2F,amqp://{user}:{password}@{host}2:5673/%2F"
    assert redact_url(cluster) == f"amqp://{user}:***@{host}:5672/%2F,amqp://{user}:***@{host}2:5673/%2F"


def dsn_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsn_bare(value: str) -> str:
    escaped = "".join("\\" + c if c.isspace() or c == "\\" else c for c in value)
    return "\\" + escaped if escaped.startswith("'") else escaped


@PROPERTY
@given(password=PRINTABLE, quoted=st.booleans(), keyword=st.sampled_from(["password", "sslpassword"]))
def test_a_dsn_password_of_any_printable_characters_is_hidden_whole(password, quoted, keyword):
    value = dsn_quoted(password) if quoted else dsn_bare(password)
    dsn = f"host=db port=5432 {keyword}={value} user=ingest dbname=x"
    assert psycopg2.extensions.parse_dsn(dsn)[keyword] == password  # libpq reads it so
    assert redact(dsn) == redact_url(dsn) == f"host=db port=5432 {keyword}=*** user=ingest dbname=x"
    line = formatted(RedactingJsonFormatter("%(message)s"), f"bad dsn {dsn}", dsn=dsn)
    assert json.loads(line) == {"message": f"bad dsn {redact(dsn)}", "dsn": redact(dsn)}


SEPARATED = st.sampled_from(SECRET_NAMES).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title(), name.replace("_", "-"), name.replace("-", "_")]))
QUERY_VALUE = st.text(alphabet=string.printable.translate(str.maketrans("", "", "& \t\n\r\x0b\x0c#")),
                      min_size=1, max_size=24)


@PROPERTY
@given(name=SEPARATED, value=QUERY_VALUE, plain=st.sampled_from(PLAIN_NAMES))
def test_a_secret_query_parameter_of_any_value_is_hidden_whole(name, value, plain):
    url = f"https://api.example.org/v1/x?{plain}=kept&{name}={value}&page=2"
    shown = f"https://api.example.org/v1/x?{plain}=kept&{name}=***&page=2"
    assert redact_url(url) == shown and redact(url) == shown
    assert redact(f"GET {url} failed") == f"GET {shown} failed"
    line = formatted(RedactingJsonFormatter("%(message)s"), "polled", endpoint=url)
    assert json.loads(line) == {"message": "polled", "endpoint": shown}


# Secrets of the config and environment of the command tests, and how the review wrote them.
DB_PASSWORD = "Tr0ub4dor'3x9"
MQ_PASSWORD = 'Mq7"Sekr8'
API_SECRETS = {"api_token": "TokA'1z9", "client_secret": "Sec\"B2y8", "auth": "AuthC3x7",
               "private_token": "PrivD4w6", "api-key": "KeyE5'v5", "sig": "SigF6u4", "apiToken": "ApiG7t3"}


def assert_hidden(text: str, *secrets: str) -> None:
    """No secret, nor any piece of it between its quotes (never half-masked)."""
    for secret in secrets:
        for piece in [secret] + [p for p in secret.replace('"', "'").split("'") if len(p) >= 3]:
            assert piece not in text, (piece, text[max(0, text.find(piece) - 200):text.find(piece) + 200])


def quoted_password_url(database_url: str, password: str = DB_PASSWORD) -> str:
    dsn = psycopg2.extensions.parse_dsn(database_url)
    return (f"postgresql://{dsn.get('user', 'postgres')}:{password}@{dsn.get('host', '127.0.0.1')}:"
            f"{dsn.get('port', '5432')}/{dsn['dbname']}")


def run_ingestd(config_path, *args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(ingestd_cmd("--config", str(config_path), *args), capture_output=True, text=True,
                          env=env, timeout=timeout)


def api_source_toml(name: str, url: str, schema: str | None = None) -> str:
    query = "&".join(f"{k}={v}" for k, v in API_SECRETS.items() if k in ("api_token", "client_secret", "auth"))
    params = ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in API_SECRETS.items()
                       if k not in ("api_token", "client_secret", "auth"))
    return f"""
[[sources]]
name = "{name}"
kind = "api"
provider = "http_json"
url = {json.dumps(f"{url}?{query}&q=kept")}
params = {{{params}, page = "2"}}
records_path = "data.items"
interval = "1h"
""" + (f'schema = "{schema}"\n' if schema else "")


@pytest.mark.integration
def test_check_status_config_show_and_runs_first_log_line_hide_quoted_passwords(write_config, database_url, amqp_url,
                                                                                 procs, tmp_path):
    config_path = write_config(sources=api_source_toml("api_tok", "http://127.0.0.1:1/v1/items"))
    mq = amqp_url.replace("guest:guest@", f"guest:{MQ_PASSWORD}@")
    for db_url in (quoted_password_url(database_url), f"{database_url} password={DB_PASSWORD}"):
        env = {"INGESTD_DATABASE_URL": db_url, "INGESTD_AMQP_URL": mq}
        check = run_ingestd(config_path, "check", env_extra=env)
        assert "database" in check.stdout and "reachable" in check.stdout, check.stdout + check.stderr
        status = run_ingestd(config_path, "status", env_extra=env)
        status_json = run_ingestd(config_path, "status", "--json", env_extra=env)
        assert json.loads(status_json.stdout)["database_url_from"] == "environment variable INGESTD_DATABASE_URL"
        shown = run_ingestd(config_path, "config", "show", env_extra=env)
        shown_json = run_ingestd(config_path, "config", "show", "--json", env_extra=env)
        for result in (check, status, status_json, shown, shown_json):
            assert_hidden(result.stdout + result.stderr, DB_PASSWORD, MQ_PASSWORD, *API_SECRETS.values())
        settings_shown = {s["key"]: s["value"] for s in json.loads(shown_json.stdout)["settings"]}
        assert settings_shown["sources.api_tok.url"].endswith("?api_token=***&client_secret=***&auth=***&q=kept")
        assert settings_shown["sources.api_tok.params"] == {
            "private_token": REDACTED, "api-key": REDACTED, "sig": REDACTED, "apiToken": REDACTED, "page": "2"}
    # run starts only with a broker that takes its login: the broker's own password here.
    procs(config_path, "run", "--log-format", "json",
          env=dict(os.environ, INGESTD_DATABASE_URL=quoted_password_url(database_url)))
    log = tmp_path / "run-0.log"
    wait_for(lambda: log.exists() and "ingestd starting" in log.read_text(), timeout=60)
    first = json.loads(log.read_text().splitlines()[0])
    assert first["message"] == "ingestd starting" and first["database"].startswith("postgresql://postgres:***@")
    assert_hidden(log.read_text(), DB_PASSWORD, *API_SECRETS.values())


@pytest.mark.integration
def test_a_poll_keeps_secret_parameters_out_of_events_tables_dead_letters_and_logs(write_config, db, procs,
                                                                                    tmp_path):
    api = ApiServer()
    try:
        api.routes["/v1/items"] = json.dumps({"data": {"items": [{"id": 1}, {"id": 2}]}}).encode()
        api.routes["/v1/rejected"] = json.dumps({"data": {"items": [{"id": 3}]}}).encode()
        strict = tmp_path / "strict.json"
        strict.write_text(json.dumps({"type": "object", "required": ["never_there"]}))
        config_path = write_config(
            extra="[poller]\nretry_base_seconds = 0.05\nmax_attempts = 2\n",
            sources=api_source_toml("api_tok", f"{api.url}/v1/items")
            + api_source_toml("api_bad", f"{api.url}/v1/rejected", str(strict)))
        procs(config_path, "consume", "--log-format", "json")
        poll = run_ingestd(config_path, "poll", "--once", "--log-format", "json")
        assert poll.returncode == 0, poll.stdout + poll.stderr
        wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status <> 'running'")[0][0] == 2
                 and query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 1, timeout=60)
        sent = api.hits("/v1/items")[0][1]  # the API got every secret
        assert sent["api_token"] == [API_SECRETS["api_token"]] and sent["api-key"] == [API_SECRETS["api-key"]]
        endpoint = query(db, "SELECT api_endpoint FROM bronze.api_tok LIMIT 1")[0][0]
        assert endpoint == f"{api.url}/v1/items?q=kept&page=2", endpoint
        dead = query(db, "SELECT event->>'endpoint', reason FROM ops.dead_letters")[0]
        assert dead == (f"{api.url}/v1/rejected?q=kept&page=2", "schema_rejected")
        paths = sorted(row[0] for row in query(db, "SELECT file_path FROM ops.pipeline_runs"))
        assert paths == sorted([dead[0], endpoint])
        dump = "\n".join(query(db, f'SELECT coalesce(string_agg(t::text, E\'\\n\'), \'\') FROM {table} t')[0][0]
                         for table in ("ops.pipeline_runs", "ops.dead_letters", "ops.raw_ingest_manifest",
                                       "bronze.api_tok", "ops.poll_state"))
        logs = poll.stdout + poll.stderr + (tmp_path / "consume-0.log").read_text()
        assert endpoint in logs  # the consumer logs the endpoint as the event's path
        assert_hidden(dump + logs, *API_SECRETS.values())
    finally:
        api.close()
