"""The layering of the package, read from the code.

records/ (``ingestd.records``) is the lowest room: reading files into
records and ingestd's JSON Schema dialect. It imports nothing of ingestd but
``ingestd.daemon.errors``, so that both the daemon's config and the consumers
may import it. The daemon's library modules import nothing of
``ingestd.consumers``; only its command modules (the handlers of ``ingestd``'s
commands) wire the consumers in. Every import counts, those inside functions
too, relative ones resolved against the module's own package.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

# daemon/ files that are command modules (they may import ingestd.consumers),
# besides any *_commands.py and daemon/package/ (the ``ingestd`` package itself).
COMMAND_MODULES = {"cli.py", "roles.py", "setup_commands.py", "operate.py", "partition_commands.py", "__main__.py"}
# Library modules of daemon/ that still import ingestd.consumers, and why:
# each is an expected failure until its import moves (strict: the mark goes
# when it does).
PENDING: dict[str, str] = {}


def package_of(path: Path) -> str:
    """The dotted name of the package ``path`` is installed in (setup.cfg's
    package_dir: daemon/package/ is ``ingestd`` itself)."""
    parts = list(path.relative_to(REPO).parent.parts)
    if parts[:2] == ["daemon", "package"]:
        parts = parts[2:]
    return ".".join(["ingestd"] + parts)


def imports(source: str, package: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import of ``source``, a module of
    ``package``, wherever it is (inside functions too): ``import a.b`` is
    (line, "a.b", ()), ``from ..c import d`` in package ingestd.daemon is
    (line, "ingestd.c", ("d",)); ``importlib.import_module("a.b")`` and
    ``__import__("a.b")`` with a literal name count as ``import a.b``."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.append((node.lineno, module, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
            found.append((node.lineno, node.args[0].value, ()))
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def takes_consumers(module: str, names: tuple[str, ...]) -> bool:
    """Whether the import brings in ingestd.consumers or a module of it."""
    return within(module, "ingestd.consumers") or (module == "ingestd" and "consumers" in names)


def takes_daemon_beyond_errors(module: str, names: tuple[str, ...]) -> bool:
    """Whether the import brings in a module of ingestd.daemon other than
    ingestd.daemon.errors (``from ingestd.daemon import errors`` takes only it)."""
    if module == "ingestd":
        return "daemon" in names
    if module == "ingestd.daemon":
        return names != ("errors",)
    return within(module, "ingestd.daemon") and not within(module, "ingestd.daemon.errors")


def imports_of(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    return imports(path.read_text(encoding="utf-8"), package_of(path))


def library_modules() -> list[Path]:
    daemon = REPO / "daemon"
    return sorted(path for path in daemon.rglob("*.py")
                  if path.relative_to(daemon).parts[0] != "package"
                  and not (path.parent == daemon and (path.name in COMMAND_MODULES
                                                      or path.name.endswith("_commands.py"))))


def test_every_kind_of_import_is_seen_resolved():
    """The checks below are only as good as this reading of the code."""
    source = ("from ..consumers import validation\n"
              "def later():\n"
              "    from ingestd.consumers.compiled import compile_fast\n"
              "    import importlib\n"
              "    return importlib.import_module('ingestd.consumers.infer')\n"
              "from . import errors\n"
              "from .. import consumers\n"
              "from .providers import base\n")
    found = imports(source, "ingestd.daemon")
    assert [(module, names) for _, module, names in found] == [
        ("ingestd.consumers", ("validation",)), ("ingestd.daemon", ("errors",)), ("ingestd", ("consumers",)),
        ("ingestd.daemon.providers", ("base",)), ("ingestd.consumers.compiled", ("compile_fast",)),
        ("importlib", ()), ("ingestd.consumers.infer", ())]
    assert [takes_consumers(m, n) for _, m, n in found] == [True, False, True, False, True, False, True]
    assert [takes_daemon_beyond_errors(m, n) for _, m, n in found] == [False, False, False, True, False, False,
                                                                        False]
    assert not takes_daemon_beyond_errors("ingestd.daemon.errors", ("PermanentError",))
    assert takes_daemon_beyond_errors("ingestd.daemon", ("errors", "config"))
    assert package_of(REPO / "daemon" / "providers" / "fred.py") == "ingestd.daemon.providers"
    assert package_of(REPO / "daemon" / "package" / "__main__.py") == "ingestd"
    assert package_of(REPO / "records" / "dialect.py") == "ingestd.records"


def test_the_lists_hold_real_modules():
    """A command module or a pending one renamed would silently widen the
    rule: every name given exists, and the layers were all found."""
    daemon = REPO / "daemon"
    assert all((daemon / name).is_file() for name in COMMAND_MODULES | set(PENDING))
    assert (daemon / "config.py") in library_modules() and (daemon / "roles.py") not in library_modules()
    assert (REPO / "records" / "dialect.py").is_file()


def _library_param(path: Path) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[path.name])] if path.name in PENDING else []
    return pytest.param(path, id=str(path.relative_to(REPO)), marks=marks)


@pytest.mark.parametrize("path", [_library_param(path) for path in library_modules()])
def test_the_daemons_library_modules_import_nothing_of_the_consumers(path):
    found = [f"line {line}: {module}" for line, module, names in imports_of(path) if takes_consumers(module, names)]
    assert not found, (f"{path.relative_to(REPO)} imports ingestd.consumers ({'; '.join(found)}): only the "
                       "command modules wire the consumers in; what both need belongs in records/")


@pytest.mark.parametrize("path", sorted((REPO / "records").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_records_import_nothing_of_ingestd_but_the_daemons_errors(path):
    found = [f"line {line}: {module}" for line, module, names in imports_of(path)
             if takes_consumers(module, names) or takes_daemon_beyond_errors(module, names)]
    assert not found, (f"{path.relative_to(REPO)} imports more of ingestd than ingestd.daemon.errors "
                       f"({'; '.join(found)})")


def test_loading_a_config_imports_no_reader_of_parquet_nor_consumers(tmp_path):
    """The watcher, the poller and every command load the config; pyarrow
    (tens of MB and a tenth of a second) and the consumers are for the
    processes that read files. The registry of formats is built at load, so
    a format's declaration must stay light."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from ingestd.daemon.config import load_config\n"
            f"load_config({str(REPO / 'ingestd.example.toml')!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow' or m.startswith('ingestd.consumers')"
            " or m == 'ingestd.records.parquetread'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
