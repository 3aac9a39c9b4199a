"""Alerts reach people, for real: the shipped Alertmanager configuration passes `amtool
check-config`, and a real Prometheus and a real Alertmanager, started here on free ports with the
shipped rules, alertmanager.yml and templates, send the alerts of a running `ingestd run` by email
(to an SMTP server inside this test) and webhook (an HTTP endpoint inside this test).

What the test changes in the shipped files: addresses (the daemon's health port, the SMTP relay,
the webhook, Alertmanager), the secrets' folder, STARTTLS off (the test's SMTP server has no TLS),
and waits (scrape and evaluation every second, group_wait and group_interval of a second, the
`for:` of the alerts it waits for); nothing else.

Needs prometheus, prometheus-alertmanager and amtool (Debian: apt-get install prometheus
prometheus-alertmanager); skipped with the reason elsewhere, failed under INGESTD_TEST_LIVE=1 (CI
installs them)."""
from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from .conftest import FITBIT, REPO, drop_file, ingestd_cmd, query
from .test_e2e import wait_for
from .test_health import free_port, get

MONITORING = REPO / "deploy" / "monitoring"
SECRETS = "/etc/prometheus/alertmanager-secrets/"

pytestmark = [pytest.mark.live, pytest.mark.integration, pytest.mark.e2e]


def tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    reason = (f"{names[0]} not installed (Debian: apt-get install prometheus prometheus-alertmanager; "
              ".ci/run installs them)")
    if os.environ.get("INGESTD_TEST_LIVE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def test_the_shipped_alertmanager_configuration_is_valid():
    amtool = tool("amtool")
    result = subprocess.run([amtool, "check-config", str(MONITORING / "alertmanager.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout and "2 receivers" in result.stdout, result.stdout
    # Secrets are read from files, never written in the configuration.
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    assert config["global"]["smtp_auth_password_file"].startswith(SECRETS)
    assert "smtp_auth_password" not in config["global"]
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    webhook = receivers["ingestd-operators"]["webhook_configs"][0]
    assert webhook["http_config"]["authorization"]["credentials_file"].startswith(SECRETS)
    assert receivers["ingestd-slack"]["slack_configs"][0]["api_url_file"].startswith(SECRETS)
    assert config["route"]["group_by"] == ["alertname", "source"]
    kept = (MONITORING / "secrets" / ".gitignore").read_text().split()
    assert "*" in kept and "!*.example" in kept


def test_a_broken_template_fails_the_check(tmp_path):
    """The check can fail: a template that does not parse is reported."""
    amtool = tool("amtool")
    shutil.copy(MONITORING / "alertmanager.yml", tmp_path / "alertmanager.yml")
    (tmp_path / "templates").mkdir()
    text = (MONITORING / "templates" / "ingestd.tmpl").read_text()
    (tmp_path / "templates" / "ingestd.tmpl").write_text(text.replace("{{ end }}", "", 1))
    result = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0


# --- An SMTP server and an HTTP endpoint inside the test ---------------------------------------

class Mailbox(socketserver.ThreadingTCPServer):
    """Enough SMTP for Alertmanager (EHLO, AUTH PLAIN, MAIL, RCPT, DATA): keeps each message and
    the credentials it was sent with."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), SmtpSession)


class SmtpSession(socketserver.StreamRequestHandler):
    server: Mailbox

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 localhost ESMTP test")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode(errors="replace").strip()
            upper = verb.upper()
            if upper.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250-localhost\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
            elif upper.startswith("AUTH PLAIN"):
                parts = verb.split()
                if len(parts) < 3:
                    self.reply("334 ")
                    parts.append(self.rfile.readline().decode().strip())
                _, user, password = base64.b64decode(parts[2]).decode().split("\0")
                self.server.logins.append((user, password))
                self.reply("235 2.7.0 authenticated")
            elif upper == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    data = self.rfile.readline()
                    if data in (b".\r\n", b".\n", b""):
                        break
                    lines.append(data[1:] if data.startswith(b"..") else data)
                self.server.messages.append(email.message_from_bytes(b"".join(lines), policy=email.policy.default))
                self.reply("250 2.0.0 queued")
            elif upper == "QUIT":
                self.reply("221 bye")
                return
            else:  # MAIL FROM, RCPT TO, RSET, NOOP
                self.reply("250 ok")


class Webhook(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        super().__init__(("127.0.0.1", 0), WebhookHandler)


class WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def api(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


# --- The stack ----------------------------------------------------------------------------------

SOURCES = f"""
[[sources]]
name = "daily_activity"
format = "csv"
schema = "{REPO / 'schemas'}/daily_activity.json"

[[sources]]
name = "sleep_day"
format = "csv"
schema = "{REPO / 'schemas'}/sleep_day.json"
max_invalid_ratio = 0.9

[[sources]]
name = "events_jsonl"
format = "jsonl"
"""
# This machine is small and shared: a load may take more than the default 2 s objective.
OBJECTIVES = "[objectives]\nlatency_p95_seconds = 300\n"
# The alerts this test waits for, and the `for:` they get here.
SHORTENED = {"IngestdDeadLetter": "1s", "IngestdRunErrorRate": "1s", "IngestdDataQuality": "1s"}


def prometheus_files(folder: Path, health_port: int, alertmanager_port: int) -> Path:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] in SHORTENED:
            rule["for"] = SHORTENED[rule["alert"]]
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    job = config["scrape_configs"][0]
    del job["dns_sd_configs"], job["relabel_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{health_port}"], "labels": {"role": "run"}}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "prometheus.yml"


def alertmanager_files(folder: Path, smtp_port: int, webhook_port: int) -> Path:
    secrets = folder / "secrets"
    secrets.mkdir()
    # Alertmanager 0.25 sends the password file's bytes as they are, a final newline included
    # (the bearer token's is trimmed): docs/alerting.md says to write it with printf '%s'.
    (secrets / "smtp_password").write_text("smtp-s3cret")
    (secrets / "webhook_token").write_text("hook-t0ken\n")
    (secrets / "slack_api_url").write_text("http://127.0.0.1:9/unused\n")
    shutil.copytree(MONITORING / "templates", folder / "templates")
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text().replace(SECRETS, f"{secrets}/"))
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp_port}"
    config["global"]["smtp_require_tls"] = False
    config["route"].update(group_wait="1s", group_interval="1s")
    webhook = config["receivers"][0]["webhook_configs"][0]
    webhook["url"] = f"http://127.0.0.1:{webhook_port}/ingestd"
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "alertmanager.yml"


def sleep_day_half_invalid() -> bytes:
    """Ten real rows of sleepDay_merged.csv, five of them with minutes that are not a number."""
    lines = (FITBIT / "sleepDay_merged.csv").read_bytes().split(b"\r\n")
    rows = []
    for i, row in enumerate(lines[1:11]):
        cells = row.split(b",")
        if i % 2:
            cells[3] = b"lots"
        rows.append(b",".join(cells))
    return b"\r\n".join([lines[0], *rows]) + b"\r\n"


def test_failures_reach_people_by_email_and_webhook_and_so_do_their_resolutions(
        write_config, procs, db, tmp_path):
    prometheus_bin = tool("prometheus")
    alertmanager_bin = tool("prometheus-alertmanager", "alertmanager")
    mailbox, webhook = serve(Mailbox()), serve(Webhook())
    health_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
    stack = tmp_path / "monitoring"
    stack.mkdir()
    am_config = alertmanager_files(stack, mailbox.server_address[1], webhook.server_address[1])
    prom_config = prometheus_files(stack, health_port, alertmanager_port)
    logs = []

    def start(*cmd):
        log = open(stack / f"{Path(cmd[0]).name}.log", "wb")
        logs.append(log)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    alertmanager = start(alertmanager_bin, f"--config.file={am_config}", f"--storage.path={stack / 'am-data'}",
                         f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address=",
                         "--web.external-url=http://alertmanager.example.org:9093")
    prometheus = start(prometheus_bin, f"--config.file={prom_config}", f"--storage.tsdb.path={stack / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{prometheus_port}", "--rules.alert.resend-delay=1s")
    landing = tmp_path / "data_lake"
    config_path = write_config(health_port=health_port, sources=SOURCES, extra=OBJECTIVES)
    procs(config_path, "run")
    prom = f"http://127.0.0.1:{prometheus_port}/api/v1"
    am = f"http://127.0.0.1:{alertmanager_port}/api/v2"

    def value(expression: str) -> float | None:
        result = api(f"{prom}/query?" + urllib.parse.urlencode({"query": expression}))["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def evaluated_since(moment: float) -> bool:
        groups = api(f"{prom}/rules")["data"]["groups"]
        stamp = groups[0]["lastEvaluation"]  # RFC 3339 in UTC, with nanoseconds
        return datetime.fromisoformat(stamp[:19] + "+00:00").timestamp() > moment

    def mail_with(*words: str):
        return next((m for m in mailbox.messages if all(w in m["Subject"] + text_of(m) for w in words)), None)

    def post_with(status: str, alertname: str, source: str):
        return next((body for _, body in webhook.posts if body["status"] == status
                     and any(a["labels"]["alertname"] == alertname and a["labels"].get("source") == source
                             and a["status"] == status for a in body["alerts"])), None)

    try:
        wait_for(lambda: get(health_port, "/readyz")[0] == 200, timeout=60)
        wait_for(lambda: api(f"{prom}/alertmanagers")["data"]["activeAlertmanagers"], timeout=60)

        # A healthy daemon: a file loads, Prometheus sees it and evaluates the rules again and
        # again; nothing fires (a rule may be pending for a moment at the start: the consumers
        # count 0 before they attach), and nobody is told anything.
        drop_file(landing, "daily_activity/daily.csv", FITBIT / "dailyActivity_merged.csv")
        wait_for(lambda: value('sum(ingestd_runs_total{source="daily_activity", status="success"})') == 1,
                 timeout=60)
        seen = time.time()
        wait_for(lambda: evaluated_since(seen + 3), timeout=30)
        assert value('count(ALERTS{alertstate="firing"})') is None, api(f"{prom}/alerts")
        assert value(f'count(ALERTS{{alertname=~"{"|".join(SHORTENED)}"}})') is None, api(f"{prom}/alerts")
        assert api(f"{am}/alerts") == []
        assert mailbox.messages == [] and webhook.posts == []

        # A broken file: an email and a webhook message name the source, the reason, the command.
        drop_file(landing, "events_jsonl/broken.jsonl", b'{"id": 1}\nnot json\n')
        command = "ingestd dlq list --source events_jsonl --reason parse_error"
        mail = wait_for(lambda: mail_with("IngestdDeadLetter", "events_jsonl", "parse_error", command), timeout=90)
        assert mail["Subject"] == "[FIRING:1] events_jsonl: 1 dead letter(s) waiting, reason parse_error"
        assert mail["To"] == "data-platform@example.org"
        assert mailbox.logins[-1] == ("ingestd-alerts@example.org", "smtp-s3cret")
        body = wait_for(lambda: post_with("firing", "IngestdDeadLetter", "events_jsonl"), timeout=30)
        alert = body["alerts"][0]
        assert alert["labels"]["reason"] == "parse_error" and alert["annotations"]["command"] == command
        assert body["groupLabels"] == {"alertname": "IngestdDeadLetter", "source": "events_jsonl"}
        assert all(auth == "Bearer hook-t0ken" for auth, _ in webhook.posts)
        # The one failed run of the source is 100% of its runs: above its 1% objective too.
        wait_for(lambda: mail_with("IngestdRunErrorRate", "events_jsonl", "ingestd runs --source events_jsonl "
                                   "--status failure"), timeout=60)

        # Half the records of a file invalid, loaded (max_invalid_ratio 0.9): data quality.
        drop_file(landing, "sleep_day/sleep.csv", sleep_day_half_invalid())
        quality = wait_for(lambda: mail_with("IngestdDataQuality", "sleep_day"), timeout=60)
        assert "sleep_day: 50% of records invalid in the last hour" in quality["Subject"]
        assert query(db, "SELECT count(*) FROM bronze.sleep_day WHERE validation_status = 'invalid'")[0][0] == 5

        # The dead letter discarded: the resolved notice, by email and webhook.
        discard = subprocess.run(ingestd_cmd("--config", str(config_path), "dlq", "discard", "--source",
                                             "events_jsonl", "--note", "a test file"),
                                 capture_output=True, text=True, timeout=60)
        assert discard.returncode == 0, discard.stdout + discard.stderr
        resolved = wait_for(lambda: mail_with("[RESOLVED]", "IngestdDeadLetter", "events_jsonl"), timeout=90)
        assert resolved["Subject"] == "[RESOLVED] events_jsonl: 1 dead letter(s) waiting, reason parse_error"
        wait_for(lambda: post_with("resolved", "IngestdDeadLetter", "events_jsonl"), timeout=30)
        report = [f"Subject: {m['Subject']}\n{text_of(m)}" for m in (mail, resolved, quality)]
        report.append(json.dumps(body, indent=2))
        (tmp_path / "received.txt").write_text("\n=====\n".join(report))
        print("\n=====\n".join(report))
    finally:
        for proc in (prometheus, alertmanager):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
        mailbox.shutdown()
        webhook.shutdown()
