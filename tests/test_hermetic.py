"""The suite is hermetic: the user's INGESTD_* settings reach neither the
tests nor the ingestd processes they start, and nothing stays behind."""
import os
import subprocess
import sys

import pika
import pytest

from .conftest import REPO, USED_PREFIXES


def test_no_ingestd_setting_of_the_user_is_left_in_the_environment():
    leaked = [k for k in os.environ if k.startswith("INGESTD_") and not k.startswith("INGESTD_TEST_")]
    assert leaked == []
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('INGESTD_DATABASE_URL'))"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "None"


def test_a_session_with_the_quick_starts_exports_ignores_them_and_says_so(tmp_path):
    env = dict(os.environ, INGESTD_DATABASE_URL="postgresql://someone:secret@nowhere.invalid/theirs",
               INGESTD_CONFIG=str(tmp_path / "theirs.toml"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "tests/test_hermetic.py::test_no_ingestd_setting_of_the_user_is_left_in_the_environment"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "INGESTD_CONFIG, INGESTD_DATABASE_URL cleared for these tests" in result.stdout
    assert "secret" not in result.stdout


@pytest.mark.integration
def test_a_tests_broker_names_are_gone_after_it(procs, write_config, prefix, amqp_url):
    """procs stops its processes before the prefix's names are deleted; this
    test leaves a running daemon for the fixtures to stop."""
    import time
    procs(write_config(), "consume")
    deadline = time.monotonic() + 60
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        while time.monotonic() < deadline:
            try:
                connection.channel().queue_declare(prefix + "ingest.events", passive=True)
                break
            except pika.exceptions.ChannelClosedByBroker:
                time.sleep(0.2)
        else:
            raise AssertionError("the consumer never declared its queue")
    finally:
        connection.close()
    assert prefix in USED_PREFIXES
