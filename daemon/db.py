"""PostgreSQL connections and migrations."""
from __future__ import annotations

import hashlib
import logging
import re
from importlib.resources import files

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from .errors import ConfigError, IngestError, NotPermittedError, TransientError
from .logs import redact_text, redact_url

log = logging.getLogger(__name__)

def lock_key(*parts: str) -> int:
    """A ``pg_advisory_lock`` key for a name (parts joined by ``:``): the
    first 8 bytes of its hash, so that it cannot collide with an
    application's small ints."""
    return int.from_bytes(hashlib.sha256(":".join(parts).encode()).digest()[:8], "big", signed=True)


# The migration runner's lock.
MIGRATION_LOCK_KEY = lock_key("ingestd.migrate")

psycopg2.extras.register_uuid()


# What libpq says when the server answered and refused: retrying cannot
# cure these (a message, the fix; {0}, {1} are the quoted names).
_REFUSALS = (
    (re.compile(r'password authentication failed for user "([^"]*)"'),
     "the database refused the password of user {0}",
     "fix the password in database.url (or INGESTD_DATABASE_URL)"),
    (re.compile(r'role "([^"]*)" does not exist'),
     "database user {0} does not exist",
     "create it (README, Quick start: createuser --createdb {0}), or fix the user in database.url"),
    (re.compile(r'no pg_hba\.conf entry for host "([^"]*)", user "([^"]*)"'),
     "the server's pg_hba.conf admits no connection from {0} for user {1}",
     "add a line for it to pg_hba.conf and reload PostgreSQL"),
    (re.compile(r'permission denied for database "([^"]*)"|does not have CONNECT privilege'),
     "this user may not connect to database {0}",
     "GRANT CONNECT ON DATABASE <name> TO <user>"),
    (re.compile(r"authentication failed|no password supplied|password is required"),
     "the database refused the login",
     "check the user and password in database.url (or INGESTD_DATABASE_URL)"),
)


# What libpq (or the server, of a startup parameter) says of a connection
# string it cannot use: a config error, not an outage to wait out.
_MALFORMED = re.compile(
    r'invalid port number|invalid integer value "[^"]*" for connection option "[^"]*"|'
    r'invalid "?\w+"? value: |could not match \d+ (?:port numbers|host names) to \d+|'
    r'invalid connection option "[^"]*"|could not parse network address "[^"]*"|'
    r'invalid value for parameter "[^"]*"|unrecognized configuration parameter "[^"]*"')
URL_FIX = "fix database.url (or INGESTD_DATABASE_URL)"


def connection_error(url: str, exc: psycopg2.OperationalError) -> IngestError:
    """``ConfigError`` when libpq (or the server) refuses the connection
    string itself (a port, an option's value), ``NotPermittedError`` (with
    its fix) when the server refused us, else ``TransientError``; never with
    the password."""
    text = str(exc).strip()
    malformed = _MALFORMED.search(text)
    if malformed:
        return ConfigError(f"database {redact_url(url)}: libpq refuses the connection string: "
                           f"{redact_text(malformed.group(0).rstrip(': '))}; {URL_FIX}")
    for pattern, message, fix in _REFUSALS:
        found = pattern.search(text)
        if found:
            names = [g for g in found.groups() if g is not None]
            return NotPermittedError(f"database {redact_url(url)}: {message.format(*names, '?', '?')}",
                                     fix.format(*names, "?"))
    if "Connection refused" in text:
        text = "nothing accepts connections there (is PostgreSQL running? is the port right?)"
    elif "could not translate host name" in text:
        text = "the host name does not resolve"
    return TransientError(f"database {redact_url(url)} unreachable: {redact_text(text)}")


# The values libpq takes for the options it checks only when it connects.
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_OPTION_VALUES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "ssl_min_protocol_version": _TLS_VERSIONS,
    "ssl_max_protocol_version": _TLS_VERSIONS,
}


def dsn_problem(url: str) -> str | None:
    """Why libpq would refuse ``url`` (which ``parse_dsn`` reads) when it
    connects, as far as can be told without connecting: a port that is no
    port, more ports than hosts, an option's value it does not know; None
    otherwise (libpq's other refusals are told apart when it connects:
    ``connection_error``). Never repeats a password."""
    dsn = psycopg2.extensions.parse_dsn(url)
    ports = dsn["port"].split(",") if dsn.get("port") else []
    for port in ports:
        if port.strip() and not (re.fullmatch(r"[0-9]{1,5}", port.strip()) and 1 <= int(port) <= 65535):
            return f"port {port[:12]!r} is not a number from 1 to 65535"
    hosts = max(len((dsn.get("host") or "").split(",")), len((dsn.get("hostaddr") or "").split(",")))
    if len(ports) > 1 and len(ports) != hosts:
        return f"{len(ports)} ports for {hosts} host(s): give one port, or one for each host"
    for key, allowed in _OPTION_VALUES.items():
        value = dsn.get(key)
        fold = str.lower if key.endswith("_version") else str  # libpq compares TLS versions ignoring case
        if value and fold(value) not in {fold(a) for a in allowed}:
            return f"{key} {value[:24]!r} is not one of {', '.join(allowed)}"
    return None


def connect(url: str, timeout: int = 10, application_name: str = "ingestd") -> psycopg2.extensions.connection:
    """Open a connection with TCP keepalives, so a dead server is noticed.

    Raises ``TransientError`` (password-free message) when the server cannot
    be reached, ``NotPermittedError`` when it refuses.
    """
    try:
        return psycopg2.connect(
            url,
            connect_timeout=timeout,
            application_name=application_name,
            # Text goes as UTF-8 whatever the server's default (a SQL_ASCII database would
            # otherwise make psycopg2 encode file names and errors as ASCII, and fail on the rest).
            client_encoding="UTF8",
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg2.OperationalError as exc:
        raise connection_error(url, exc) from None
    except psycopg2.Error as exc:  # a connection string libpq cannot parse
        raise ConfigError(f"database {redact_url(url)}: not a valid connection string: "
                          f"{redact_text(str(exc).strip())}; {URL_FIX}") from None


class OnDemand:
    """One connection of a long-lived role, opened when first needed and
    again after it was dropped (the database went away)."""

    def __init__(self, url: str, timeout: int, application_name: str, autocommit: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.application_name = application_name
        self.autocommit = autocommit
        self._conn: psycopg2.extensions.connection | None = None

    def get(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, self.timeout, self.application_name)
            self._conn.autocommit = self.autocommit
        return self._conn

    def drop(self) -> None:
        """Close the connection (it is opened again when next needed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass


# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
# whose errors are the data's fault: retrying the same bytes cannot succeed.
DATA_FAULT_CLASSES = ("22", "23", "54")
# Classes that say "try again later": connection trouble, resources, operator
# intervention (shutdown), serialization failures and deadlocks.
TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def classify_error(exc: BaseException) -> str:
    """``transient``, ``data`` or ``bug`` for a psycopg2 error.

    A lost connection carries no SQLSTATE; it is transient like the classes
    above. Anything else (undefined table, syntax) is a bug in ingestd or in
    the database's state, neither retried in a loop nor blamed on the data.
    """
    code = getattr(exc, "pgcode", None)
    if code is None:
        return "transient" if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) else "bug"
    if code.startswith(DATA_FAULT_CLASSES):
        return "data"
    if code.startswith(TRANSIENT_CLASSES):
        return "transient"
    return "bug"


def is_connection_error(exc: BaseException) -> bool:
    """True for errors worth retrying later (see ``classify_error``)."""
    return isinstance(exc, psycopg2.Error) and classify_error(exc) == "transient"


def migration_files() -> list[tuple[str, str]]:
    """(name, SQL text) of every migration, in order."""
    folder = files("ingestd.sql")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n, folder.joinpath(n).read_text(encoding="utf-8")) for n in names]


def pending_migrations(conn: psycopg2.extensions.connection) -> list[str]:
    """Names of the migrations not applied to the database of ``conn``."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('ops.schema_migrations') IS NOT NULL")
        done: set[str] = set()
        if cur.fetchone()[0]:
            cur.execute("SELECT name FROM ops.schema_migrations")
            done = {r[0] for r in cur.fetchall()}
    return [name for name, _ in migration_files() if name not in done]


def ensure_database(url: str, timeout: int = 10) -> bool:
    """Create the database named in ``url`` when it does not exist yet.

    Returns True when this call created it. Safe to race: a process that
    finds another one's database made meanwhile goes on (False). Needs
    CREATEDB on the server; without it the error (``NotPermittedError``)
    says what to do, and only then.
    """
    dsn = psycopg2.extensions.parse_dsn(url)
    dbname = dsn.get("dbname")
    try:
        conn = psycopg2.connect(url, connect_timeout=timeout)
        conn.close()
        return False
    except psycopg2.OperationalError as exc:
        if not dbname or f'database "{dbname}" does not exist' not in str(exc):
            raise connection_error(url, exc) from None
    admin = dict(dsn, dbname="postgres")
    try:
        conn = psycopg2.connect(connect_timeout=timeout, **admin)
    except psycopg2.OperationalError as exc:
        raise connection_error(url, exc) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        log.info("created database", extra={"step": "migrate", "status": "created", "database": dbname})
        return True
    except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
        # Another process created it since we looked: committed already
        # (42P04), or while we waited on pg_database's unique index (23505).
        return False
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise NotPermittedError(
            f"database {dbname!r} does not exist and this user may not create it "
            f"({(exc.pgerror or str(exc)).strip()})",
            f"createdb -O {dsn.get('user', '<user>')} {dbname}, or give the user CREATEDB") from None
    except psycopg2.Error as exc:
        # Anything else (the template in use, the connection lost) may pass: retried at start.
        raise TransientError(f"database {dbname!r} does not exist and creating it failed: "
                             f"{redact_text((exc.pgerror or str(exc)).strip())}") from None
    finally:
        conn.close()


def migrate(url: str, timeout: int = 10) -> list[str]:
    """Apply the migrations not yet recorded in ops.schema_migrations.

    Safe to run from several processes at once: they queue on an advisory
    lock, and each file is applied in its own transaction with its record.
    Returns the names applied by this call.
    """
    ensure_database(url, timeout)
    conn = connect(url, timeout, "ingestd-migrate")
    applied: list[str] = []
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                cur.execute("CREATE SCHEMA IF NOT EXISTS ops")
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS ops.schema_migrations ("
                    " name text PRIMARY KEY, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur.execute("SELECT name, checksum FROM ops.schema_migrations")
                done = dict(cur.fetchall())
                for name, text in migration_files():
                    digest = hashlib.sha256(text.encode()).hexdigest()
                    if name in done:
                        if done[name] != digest:
                            log.warning(
                                "migration changed after it was applied",
                                extra={"step": "migrate", "status": "drift", "migration": name},
                            )
                        continue
                    conn.autocommit = False
                    try:
                        cur.execute(text)
                        cur.execute(
                            "INSERT INTO ops.schema_migrations (name, checksum) VALUES (%s, %s)", (name, digest)
                        )
                        conn.commit()
                    except psycopg2.Error as exc:
                        conn.rollback()
                        raise IngestError(f"migration {name} failed: {exc.pgerror or exc}") from None
                    finally:
                        conn.autocommit = True
                    applied.append(name)
                    log.info("applied migration", extra={"step": "migrate", "status": "applied", "migration": name})
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    finally:
        conn.close()
    return applied
