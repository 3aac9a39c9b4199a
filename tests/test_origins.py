"""Where the servers' URLs came from is said wherever they are used: an
INGESTD_DATABASE_URL exported for another project must not be followed
without a word."""
import json
import os
import subprocess

import pytest

from .conftest import ingestd_cmd

pytestmark = pytest.mark.integration


def run_json(config_path, *args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    result = subprocess.run(ingestd_cmd("--config", str(config_path), *args, "--json"), capture_output=True,
                            text=True, timeout=120, env=env)
    return json.loads(result.stdout)


def test_status_names_where_each_url_came_from(write_config, database_url):
    path = write_config()
    from_file = run_json(path, "status")
    assert from_file["database_url_from"] == f"config file {path}"
    assert from_file["broker_url_from"] == f"config file {path}"
    exported = run_json(path, "status", env_extra={"INGESTD_DATABASE_URL": database_url})
    assert exported["database_url_from"] == "environment variable INGESTD_DATABASE_URL"
    text = subprocess.run(ingestd_cmd("--config", str(path), "status"), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, INGESTD_AMQP_URL="amqp://guest:Sekrit@127.0.0.1:1/%2F")).stdout
    assert "(environment variable INGESTD_AMQP_URL)" in text and "Sekrit" not in text


def test_runs_first_log_line_names_where_each_url_came_from(write_config, database_url, tmp_path):
    path = write_config()
    # No broker.url in the file: the default (this machine's broker on its standard port).
    path.write_text("".join(line for line in path.read_text().splitlines(True) if not line.startswith('url = "amqp')))
    proc = subprocess.Popen(ingestd_cmd("--config", str(path), "--log-format", "json", "run"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=dict(os.environ, INGESTD_DATABASE_URL=database_url))
    try:
        first = next(json.loads(line) for line in proc.stdout if b"ingestd starting" in line)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert first["database_from"] == "environment variable INGESTD_DATABASE_URL"
    assert first["broker_from"] == "default"


def test_check_names_where_each_url_came_from(write_config, database_url):
    path = write_config()
    import psycopg2.extensions
    dsn = psycopg2.extensions.parse_dsn(database_url)
    missing = psycopg2.extensions.make_dsn(database_url, dbname="ingestd_no_such_db_for_origins")
    assert dsn["dbname"] != "ingestd_no_such_db_for_origins"
    result = subprocess.run(ingestd_cmd("--config", str(path), "check"), capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, INGESTD_DATABASE_URL=missing))
    database = next(line for line in result.stdout.splitlines() if line[5:].startswith("database"))
    assert "does not exist yet" in database and database.endswith("(url from environment variable "
                                                                  "INGESTD_DATABASE_URL)")
    broker = next(line for line in result.stdout.splitlines() if line[5:].startswith("broker"))
    assert broker.endswith(f"(url from config file {path})")
