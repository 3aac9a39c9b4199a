"""The systemd units, for real: a container that boots systemd (a stand-in of a Debian 12 host,
tests/live.py), ingestd installed by the steps of deploy/systemd/README.md, against the suite's
PostgreSQL and RabbitMQ through the host network.

It checks, in order: `systemctl enable --now ingestd.target` brings every unit to READY; a
dropped Fitbit file loads; `systemctl kill -s KILL` of a consumer mid-burst is restarted by
systemd and every file loads once; a configuration error (exit 2) is not restarted; the watchdog
restarts a process that stalls; `systemctl stop ingestd.target` returns only once the work in
hand is done; journalctl has the logs.

The README's `git clone` takes the repository's committed state (as in CI's fresh clone).
The units' health ports (9464, 9465, 9471, 9472, and 9480 for a consumer@10) are the host's,
since the container shares its network.
"""
from __future__ import annotations

import json
import time
import urllib.request

import psycopg2.extensions
import pytest

from .conftest import FITBIT, REPO, one_row_csv, query
from .live import HOST_CA, LABEL, REPORT, build_standin, podman, require_podman, unique, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.live]

# deploy/systemd/README.md, steps 2, 3, 5, 6 and 7, as written but for the values a test must
# choose: its database, its broker and a broker prefix of its own. Step 1 (packages) is the
# stand-in image; step 4 (accounts) is the suite's servers.
INSTALL = r"""
set -eux
useradd --system --home-dir /var/lib/ingestd --shell /usr/sbin/nologin ingestd
install -d -o ingestd -g ingestd -m 2770 /var/lib/ingestd /var/lib/ingestd/data_lake
install -d -o root -g ingestd -m 750 /etc/ingestd

git clone -q /mnt/repo /opt/ingestd/src
/usr/bin/python3 -m venv /opt/ingestd
/opt/ingestd/bin/pip install -q /opt/ingestd/src

cp /opt/ingestd/src/ingestd.example.toml /etc/ingestd/ingestd.toml
cp -r /opt/ingestd/src/schemas /etc/ingestd/schemas
cp /opt/ingestd/src/deploy/systemd/ingestd.env.example /etc/ingestd/ingestd.env
chown root:ingestd /etc/ingestd/ingestd.toml /etc/ingestd/ingestd.env
chmod 640 /etc/ingestd/ingestd.toml /etc/ingestd/ingestd.env
sed -i "s|^INGESTD_DATABASE_URL=.*|INGESTD_DATABASE_URL=$DB|; s|^INGESTD_AMQP_URL=.*|INGESTD_AMQP_URL=$AMQP|" \
    /etc/ingestd/ingestd.env
sed -i "s|^prefix = \"\"|prefix = \"$PREFIX\"|" /etc/ingestd/ingestd.toml

runuser -u ingestd -- env $(grep -v '^#' /etc/ingestd/ingestd.env | xargs) \
    /opt/ingestd/bin/ingestd --config /etc/ingestd/ingestd.toml migrate
runuser -u ingestd -- env $(grep -v '^#' /etc/ingestd/ingestd.env | xargs) \
    /opt/ingestd/bin/ingestd --config /etc/ingestd/ingestd.toml check

cp /opt/ingestd/src/deploy/systemd/*.service /opt/ingestd/src/deploy/systemd/ingestd.target \
   /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now ingestd.target
"""
UNITS = ("ingestd-watcher", "ingestd-poller", "ingestd-consumer@1", "ingestd-consumer@2")


class Host:
    def __init__(self, name: str) -> None:
        self.name = name

    def sh(self, script: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 300):
        args = ["exec", "-i"] + [f"--env={k}={v}" for k, v in (env or {}).items()] + [self.name, "bash", "-s"]
        return podman(*args, input=script, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def drop(self, files: dict[str, bytes], folder: str = "daily_activity") -> None:
        """Write the files under a staging name as the ingestd user, then rename them all in at once."""
        staging = "/var/lib/ingestd/staging"
        self.sh(f"install -d -o ingestd -g ingestd {staging}")
        for name, data in files.items():
            podman("exec", "-i", self.name, "runuser", "-u", "ingestd", "--", "tee", f"{staging}/{name}",
                   input=data.decode(), timeout=60)
        self.sh(f"cd {staging} && mv -- * /var/lib/ingestd/data_lake/{folder}/")


def one_row_files(count: int, first_id: int) -> dict[str, bytes]:
    return {f"burst-{first_id + n}.csv": one_row_csv(first_id + n) for n in range(count)}


@pytest.fixture
def host(database_url, amqp_url, prefix, tmp_path):
    require_podman()
    image = build_standin("systemd:bookworm")
    name = unique("systemd")
    mounts = ["-v", f"{REPO}:/mnt/repo:ro"]
    # ingestd.env holds a URL, as its example does (the README's `env $(... | xargs)` splits on spaces).
    dsn = psycopg2.extensions.parse_dsn(database_url)
    login = dsn.get("user", "postgres") + (f":{dsn['password']}" if dsn.get("password") else "")
    url = f"postgresql://{login}@{dsn.get('host', '127.0.0.1')}:{dsn.get('port', 5432)}/{dsn['dbname']}"
    env = {"DB": url, "AMQP": amqp_url, "PREFIX": prefix}
    if HOST_CA.exists():  # pip reaches the package index through this machine's CA bundle
        mounts += ["-v", f"{HOST_CA}:/run/ingestd-test/ca.crt:ro"]
        env["PIP_CERT"] = "/run/ingestd-test/ca.crt"
    podman("run", "-d", "--name", name, "--label", LABEL, "--privileged", "--systemd=always", "--network", "host",
           *mounts, image, "/sbin/init")
    machine = Host(name)
    try:
        wait_for(lambda: machine.sh("systemctl is-system-running", check=False).stdout.strip()
                 in ("running", "degraded"), timeout=60, what="systemd to boot in the container")
        started = time.monotonic()
        machine.sh(INSTALL, env=env, timeout=600)
        REPORT.append(f"systemd: installed by the README's steps in {time.monotonic() - started:.0f} s")
        yield machine
    finally:
        journal = podman("exec", name, "journalctl", "-u", "ingestd*", "--no-pager", "-o", "cat", check=False)
        (tmp_path / "journal.log").write_text(journal.stdout + journal.stderr)
        podman("rm", "--force", "--time", "10", name, check=False)


def test_units_under_systemd_ready_restart_no_loop_watchdog_and_stop(host, db):
    # READY=1: a Type=notify unit is active (running) only after it.
    wait_for(lambda: all(host.show(unit, "ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"}
                         for unit in UNITS), timeout=120, what="every unit to report READY")

    host.drop({"dailyActivity_merged.csv": (FITBIT / "dailyActivity_merged.csv").read_bytes()})
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0] == 1, timeout=60,
             what="the Fitbit file to load")
    assert query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0] == 940

    # SIGKILL to a consumer during a burst: systemd restarts it, every file is loaded once.
    host.drop(one_row_files(200, first_id=8_000_000_000))
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE status = 'success'")[0][0] >= 20,
             timeout=60, interval=0.05, what="the burst to be under way")
    host.sh("systemctl kill -s KILL ingestd-consumer@1")
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.raw_ingest_manifest")[0][0] == 201, timeout=120,
             what="201 files in the manifest")
    wait_for(lambda: host.show("ingestd-consumer@1", "NRestarts", "ActiveState") ==
             {"NRestarts": "1", "ActiveState": "active"}, timeout=60, what="systemd to restart consumer@1")
    assert query(db, "SELECT count(DISTINCT source_filename), count(*) FROM ops.raw_ingest_manifest")[0] == (201, 201)
    assert query(db, "SELECT count(*) FROM bronze.daily_activity")[0][0] == 940 + 200
    assert query(db, "SELECT count(*) FROM ops.dead_letters")[0][0] == 0

    # A configuration error exits 2 and is not restarted (RestartPreventExitStatus=2).
    host.sh("cp /etc/ingestd/ingestd.toml /root/good.toml && echo 'this is = not [toml' >> /etc/ingestd/ingestd.toml"
            " && systemctl restart ingestd-consumer@2", check=False)
    wait_for(lambda: host.show("ingestd-consumer@2", "ActiveState")["ActiveState"] == "failed", timeout=60,
             what="consumer@2 to fail on the broken config")
    time.sleep(8)  # past RestartSec=5: a restart would have happened by now
    after = host.show("ingestd-consumer@2", "ActiveState", "NRestarts", "ExecMainStatus")
    assert after == {"ActiveState": "failed", "NRestarts": "0", "ExecMainStatus": "2"}, after
    assert "config error" in host.sh("journalctl -u ingestd-consumer@2 -o cat --no-pager").stdout
    host.sh("cp /root/good.toml /etc/ingestd/ingestd.toml && systemctl reset-failed ingestd-consumer@2"
            " && systemctl start ingestd-consumer@2")

    # The port scheme: instance 10 serves on 9480 (9470+N, not "94710"); instance 100 is outside
    # it: a config error naming the variable, exit 2, not restarted.
    host.sh("systemctl start ingestd-consumer@10 ingestd-consumer@100", check=False)
    wait_for(lambda: host.show("ingestd-consumer@10", "SubState")["SubState"] == "running", timeout=60,
             what="consumer@10 to report READY")
    with urllib.request.urlopen("http://127.0.0.1:9480/healthz", timeout=10) as answer:  # the host network
        assert json.loads(answer.read())["status"] == "ok"
    wait_for(lambda: host.show("ingestd-consumer@100", "ActiveState")["ActiveState"] == "failed", timeout=60,
             what="consumer@100 to fail on its port")
    time.sleep(6)  # past RestartSec=5
    assert host.show("ingestd-consumer@100", "NRestarts", "ExecMainStatus") == {"NRestarts": "0", "ExecMainStatus": "2"}
    assert "INGESTD_HEALTH_PORT" in host.sh("journalctl -u ingestd-consumer@100 -o cat --no-pager").stdout
    host.sh("systemctl stop ingestd-consumer@10 && systemctl reset-failed ingestd-consumer@100")

    # A stalled process (SIGSTOP: its loops no longer beat) is killed by the watchdog and
    # restarted. The unit's 120 s are shortened for the test by a drop-in.
    host.sh("mkdir -p /etc/systemd/system/ingestd-consumer@2.service.d && printf '[Service]\\nWatchdogSec=6\\n"
            "TimeoutAbortSec=5\\n' > /etc/systemd/system/ingestd-consumer@2.service.d/test.conf"
            " && systemctl daemon-reload && systemctl restart ingestd-consumer@2")
    wait_for(lambda: host.show("ingestd-consumer@2", "SubState")["SubState"] == "running", timeout=60,
             what="consumer@2 back")
    time.sleep(10)  # the pings keep a healthy process alive past its WatchdogSec
    assert host.show("ingestd-consumer@2", "NRestarts")["NRestarts"] == "0"
    host.sh("kill -STOP $(systemctl show -p MainPID --value ingestd-consumer@2)")
    wait_for(lambda: host.show("ingestd-consumer@2", "NRestarts", "SubState")
             == {"NRestarts": "1", "SubState": "running"}, timeout=90,
             what="the watchdog to restart the stalled consumer@2")
    assert "Watchdog timeout" in host.sh("journalctl -u ingestd-consumer@2 --no-pager").stdout

    # `systemctl stop ingestd.target` returns once the work in hand is done: a 100,000-row file
    # under way is loaded whole first, and every unit is inactive when the command returns.
    header, first = (FITBIT / "dailyActivity_merged.csv").read_bytes().split(b"\r\n")[:2]
    rest = first.split(b",", 1)[1]
    body = b"".join(b"\r\n%d,%s" % (7_000_000_000 + n, rest) for n in range(100_000))
    host.drop({"large.csv": header + body})
    wait_for(lambda: query(db, "SELECT count(*) FROM ops.pipeline_runs WHERE file_path LIKE '%large.csv'")[0][0] == 1,
             timeout=60, interval=0.05, what="the large file's run to start")
    started = time.monotonic()
    host.sh("systemctl stop ingestd.target", timeout=900)
    stopped_in = time.monotonic() - started
    states = {unit: host.show(unit, "ActiveState")["ActiveState"] for unit in UNITS}
    assert set(states.values()) == {"inactive"}, states
    assert query(db, "SELECT status, rows_total FROM ops.pipeline_runs WHERE file_path LIKE '%large.csv'") == [
        ("success", 100_000)]
    REPORT.append(f"systemd: stop of ingestd.target returned after {stopped_in:.1f} s, the 100,000-row load done")

    journal = host.sh("journalctl -u ingestd-watcher -o cat --no-pager").stdout
    assert '"message": "file published"' in journal and "large.csv" in journal
