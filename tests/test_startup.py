"""Start-up: what retrying cannot fix stops ingestd at once with exit status 2
and the fix (so systemd does not restart it in a loop); what may pass (a
server not up yet) keeps the backoff."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

from .conftest import ingestd_cmd

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def start(config_path, *args, timeout=60):
    return subprocess.run(ingestd_cmd("--config", str(config_path), *args), capture_output=True, text=True,
                          timeout=timeout)


def with_url(path: Path, key: str, url: str) -> Path:
    """The config at ``path`` with ``[section] url`` (key "database"/"broker") replaced."""
    lines = path.read_text().splitlines()
    section = None
    for i, line in enumerate(lines):
        if line.strip().startswith("["):
            section = line.strip()
        elif section == f"[{key}]" and line.strip().startswith("url ="):
            lines[i] = f'url = "{url}"'
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_missing_database_role_stops_run_with_the_fix(write_config):
    path = with_url(write_config(), "database", "postgresql://no_such_role_x@127.0.0.1:5432/ingestd_never")
    result = start(path, "run")
    assert result.returncode == 2, result.stderr
    assert "cannot start" in result.stderr and "database user no_such_role_x does not exist" in result.stderr
    assert "createuser" in result.stderr and "Traceback" not in result.stderr
    check = start(path, "check")
    assert check.returncode == 1
    assert "FAIL database" in check.stdout and "createuser" in check.stdout and "ingestd migrate" not in check.stdout


def test_a_missing_vhost_and_a_refused_broker_login_stop_run_with_the_fix(write_config, amqp_url):
    base = amqp_url.rsplit("/", 1)[0]
    path = with_url(write_config(), "broker", base + "/no_such_vhost")
    result = start(path, "run")
    assert result.returncode == 2, result.stderr
    assert "virtual host 'no_such_vhost' does not exist" in result.stderr
    assert "rabbitmqctl add_vhost no_such_vhost" in result.stderr
    wrong = base.replace("guest:guest@", "guest:WrongPass9@") + "/%2F"
    result = start(with_url(path, "broker", wrong), "consume")
    assert result.returncode == 2
    assert "refused the login of user 'guest'" in result.stderr and "WrongPass9" not in result.stderr


@pytest.mark.slow  # an outage of the broker
def test_an_unreachable_broker_is_waited_for_not_refused(write_config, procs, tmp_path):
    path = with_url(write_config(), "broker", "amqp://guest:guest@127.0.0.1:1/%2F")
    proc = procs(path, "run")
    time.sleep(6)
    assert proc.poll() is None  # still trying: the broker may come up
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log = (tmp_path / "run-0.log").read_text()
    assert "nothing accepts connections at 127.0.0.1:1" in log


@pytest.fixture
def read_only_landing(tmp_path):
    """A landing folder on a read-only file system (what ProtectSystem=strict
    makes of a path missing from ReadWritePaths)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here (needs root): {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_an_unwritable_landing_folder_stops_run_with_the_fix(write_config, read_only_landing):
    path = write_config()
    text = path.read_text()
    landing = str(path.parent / "data_lake")
    path.write_text(text.replace(f'dir = "{landing}"', f'dir = "{read_only_landing}"'))
    result = start(path, "run")
    assert result.returncode == 2, result.stderr
    assert f"landing folder {read_only_landing}" in result.stderr and "fix:" in result.stderr
    # The fix names the owner by numbers, which mean the same on a host and in a container.
    assert f"chown -R {os.geteuid()}:{os.getegid()} {read_only_landing}" in result.stderr
    assert "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def password_postgres():
    """A PostgreSQL of this test's own that checks passwords (scram-sha-256),
    with a role 'ingest' whose password is 'right'. The shared server trusts
    every local connection, so a wrong password cannot be tried there."""
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("needs root, runuser and PostgreSQL 15's initdb to start a private server")
    folder = Path(tempfile.mkdtemp(prefix="ingestd-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    secret = folder / "pw"
    secret.write_text("superpw\n")
    shutil.chown(secret, "postgres", "postgres")
    port = free_port()
    subprocess.run(as_postgres + [str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-A", "scram-sha-256",
                                  "-U", "postgres", f"--pwfile={secret}"], check=True, capture_output=True)
    subprocess.run(as_postgres + [str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-w", "-l",
                                  str(folder / "log"), "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
                                  "start"], check=True, capture_output=True)
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password="superpw", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("CREATE ROLE ingest LOGIN CREATEDB PASSWORD 'right'")
        admin.close()
        yield port
    finally:
        subprocess.run(as_postgres + [str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate",
                                      "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_wrong_database_password_stops_run_and_a_right_one_starts(write_config, password_postgres):
    path = with_url(write_config(), "database",
                    f"postgresql://ingest:Wrong-Pw-7@127.0.0.1:{password_postgres}/ingest")
    result = start(path, "run")
    assert result.returncode == 2, result.stderr
    assert "refused the password of user ingest" in result.stderr and "fix the password" in result.stderr
    assert "Wrong-Pw-7" not in result.stderr + result.stdout
    check = start(path, "check")
    assert "FAIL database" in check.stdout and "Wrong-Pw-7" not in check.stdout
    migrate = start(with_url(path, "database", f"postgresql://ingest:right@127.0.0.1:{password_postgres}/ingest"),
                    "migrate")
    assert migrate.returncode == 0, migrate.stderr


def test_check_is_content_with_a_database_that_run_will_create(write_config):
    path = with_url(write_config(), "database", "postgresql://postgres@127.0.0.1:5432/ingestd_not_yet_x")
    check = start(path, "check")
    assert check.returncode == 0, check.stdout
    assert "database 'ingestd_not_yet_x' does not exist yet: ingestd run (or ingestd migrate) creates it" \
        in check.stdout


# A racer: imports done and config read before the start line arrives on
# stdin, so that the processes reach CREATE DATABASE together.
RACER = """
import sys
from ingestd.daemon import cli, roles, db  # noqa: F401 - imported before the start
sys.stdin.readline()
sys.exit(cli.main(["--config", sys.argv[1], "migrate"]))
"""


@pytest.mark.slow
def test_concurrent_first_starts_on_a_missing_database_all_succeed(service_urls, tmp_path):
    """Units, replicas or hosts starting at once against a database that does
    not exist yet: one creates it, the others see it made and go on; each
    migration is applied by exactly one of them; no one reports a lost race
    as a permission problem."""
    import sys
    import uuid

    from ingestd.daemon.db import migration_files

    from .conftest import _with_dbname, drop_database

    server_url, racers = service_urls[0], 4
    for round_ in range(5):  # the race is not met every time
        name = f"ingestd_race_{uuid.uuid4().hex[:10]}"
        config = tmp_path / f"race-{round_}.toml"
        config.write_text(f'[database]\nurl = "{_with_dbname(server_url, name)}"\n')
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(config)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(racers)]
        try:
            time.sleep(1.5)  # every racer imported and waiting
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = [(*proc.communicate(timeout=120), proc.returncode) for proc in procs]
            results = [(rc, out, err) for out, err, rc in results]
            assert [rc for rc, _, _ in results] == [0] * racers, results
            for _, _, err in results:
                assert "may not create" not in err and "Traceback" not in err, err
            applied = [int(re.search(r"applied (\d+) migration", out).group(1)) for _, out, _ in results]
            assert sum(applied) == len(migration_files()), applied  # each once, by one racer
            conn = psycopg2.connect(_with_dbname(server_url, name))
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT name, count(*) FROM ops.schema_migrations GROUP BY name ORDER BY name")
                    assert cur.fetchall() == [(n, 1) for n, _ in migration_files()]
            finally:
                conn.close()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            drop_database(server_url, name)


def test_a_user_without_createdb_is_still_told_to_get_it(service_urls):
    """Only a real refusal (insufficient privilege) is a permission problem."""
    import uuid

    from ingestd.daemon.db import ensure_database
    from ingestd.daemon.errors import NotPermittedError

    from .conftest import _admin, _with_dbname

    server_url = service_urls[0]
    role = f"ingestd_nocreate_{uuid.uuid4().hex[:8]}"
    admin = _admin(server_url)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")  # a generated name, no input
        dsn = psycopg2.extensions.parse_dsn(_with_dbname(server_url, f"ingestd_never_{uuid.uuid4().hex[:8]}"))
        url = psycopg2.extensions.make_dsn(**dict(dsn, user=role, password=None))
        with pytest.raises(NotPermittedError) as info:
            ensure_database(url, timeout=5)
        assert "may not create it" in str(info.value) and "CREATEDB" in info.value.fix
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()
