"""One owner per ops table: only the ledger writes the ``ops`` tables.

daemon/ledger.py and its parts (daemon/ledger_*.py) hold every statement
that inserts, updates or deletes ``ops`` rows; the migration runner
(daemon/db.py) writes ``ops.schema_migrations`` and nothing else. The code
is read, not run: every string a statement or assignment holds (adjacent
literals, ``+``, f-strings and ``sql.SQL(...).format`` put together in
source order) is searched for a write to an ``ops`` table.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "consumers", "records")
LEDGER = {"daemon/ledger.py"} | {f"daemon/{p.name}" for p in (REPO / "daemon").glob("ledger_*.py")}
# The migration runner records what it applied; that one table is its own.
MIGRATION_RUNNER = "daemon/db.py"
MIGRATION_TABLES = {"schema_migrations"}

# A write verb, then an ops table, named as text ("ops.x", "ops"."x") or
# as a placeholder a sql.Identifier("ops", ...) fills in.
WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|MERGE\s+INTO|COPY)\s+"
                   r"(?:ONLY\s+)?(?:\"?ops\"?\s*\.\s*\"?(\w+)|\{\})", re.IGNORECASE)


def _text(node: ast.AST) -> str:
    """The strings under ``node`` put together in source order, and an
    ``ops.<name>`` for each sql.Identifier("ops", "<name>")."""
    parts: list[tuple[int, int, str]] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, (str, bytes)):
            value = sub.value.decode("latin-1") if isinstance(sub.value, bytes) else sub.value
            parts.append((sub.lineno, sub.col_offset, value))
        elif isinstance(sub, ast.FormattedValue):
            parts.append((sub.lineno, sub.col_offset, " {} "))
    return "".join(value for _, _, value in sorted(parts))


def _identifier_tables(node: ast.AST) -> set[str]:
    """Tables a sql.Identifier("ops", "<name>") under ``node`` names."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and getattr(sub.func, "attr", getattr(sub.func, "id", None)) == "Identifier":
            args = [a.value for a in sub.args if isinstance(a, ast.Constant)]
            if args[:1] == ["ops"]:
                found.add(str(args[1]) if len(args) > 1 else "?")
    return found


def ops_writes(source: str) -> list[tuple[int, str]]:
    """(line, table) of each write to an ``ops`` table the code holds."""
    writes = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Call, ast.Assign, ast.AnnAssign, ast.Return)):
            continue
        text = _text(node)
        identified = _identifier_tables(node)
        for match in WRITE.finditer(text):
            if match.group(1):
                writes.add((node.lineno, match.group(1)))
            else:
                writes.update((node.lineno, table) for table in identified)
    return sorted(writes)


def _modules() -> dict[str, str]:
    return {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
            for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def test_only_the_ledger_writes_ops_tables():
    outside = []
    for name, source in _modules().items():
        if name in LEDGER:
            continue
        allowed = MIGRATION_TABLES if name == MIGRATION_RUNNER else set()
        outside += [f"{name}:{line} writes ops.{table}" for line, table in ops_writes(source) if table not in allowed]
    assert not outside, "ops tables written outside the ledger (daemon/ledger*.py):\n" + "\n".join(outside)


def test_the_ledger_writes_every_ops_table_it_owns():
    """The search finds the writes where they are: each ops table the
    daemon writes, in the ledger's modules."""
    modules = _modules()
    tables = {table for name in LEDGER for _, table in ops_writes(modules[name])}
    assert tables == {"pipeline_runs", "raw_ingest_manifest", "undeclared_fields", "dead_letters",
                      "api_observations", "poll_state", "partition_log"}
    assert {table for _, table in ops_writes(modules[MIGRATION_RUNNER])} == MIGRATION_TABLES


def test_callers_use_the_ledger_not_its_parts():
    """The ledger's parts are imported by the ledger only: one door."""
    parts = {Path(name).stem for name in LEDGER} - {"ledger"}
    found = []
    for name, source in _modules().items():
        if name in LEDGER:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").rsplit(".", 1)[-1] in parts:
                found.append(f"{name}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.ImportFrom):
                found += [f"{name}:{node.lineno} imports {alias.name}" for alias in node.names
                          if alias.name in parts]
            elif isinstance(node, ast.Import):
                found += [f"{name}:{node.lineno} imports {alias.name}" for alias in node.names
                          if alias.name.rsplit(".", 1)[-1] in parts]
    assert parts and not found, "\n".join(found)


def test_the_search_sees_writes_in_every_shape():
    shapes = {
        'cur.execute("UPDATE ops.pipeline_runs SET status = %s", ("x",))': "pipeline_runs",
        'cur.execute("INSERT INTO " "ops.dead_letters (id) VALUES (1)")': "dead_letters",
        'q = "DELETE FROM ops." + "poll_state WHERE source = %s"': "poll_state",
        'cur.execute(f"insert into ops.api_observations {cols} VALUES %s")': "api_observations",
        'cur.execute(b"; INSERT INTO ops.undeclared_fields (source) VALUES " + rows)': "undeclared_fields",
        'cur.execute(\'UPDATE "ops"."raw_ingest_manifest" SET status = 1\')': "raw_ingest_manifest",
        'cur.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier("ops", "partition_log")))':
            "partition_log",
        'def f():\n    return "TRUNCATE ops.pipeline_runs"': "pipeline_runs",
    }
    for code, table in shapes.items():
        assert [t for _, t in ops_writes(code)] == [table], code
    reads = ['cur.execute("SELECT * FROM ops.pipeline_runs WHERE status = %s", ("UPDATE",))',
             '"""A docstring: UPDATE ops.pipeline_runs is the ledger\'s."""',
             'cur.execute("UPDATE bronze.x SET a = 1")']
    for code in reads:
        assert ops_writes(code) == [], code
