"""One harness (issue 15, item 4): the dev server, the worker processes and the SMTP sink are
started and stopped by stack.harness and stack.sink only, and the benchmarks import nothing from
the tests."""

from __future__ import annotations

import ast
from pathlib import Path

from stack.harness import ROOT, free_port, stop_process, wait_for_port


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_benchmarks_import_nothing_from_the_tests() -> None:
    files = sorted((ROOT / "benchmarks").glob("*.py"))
    assert files
    for path in files:
        found = {m for m in imported_modules(path) if m == "tests" or m.startswith("tests.")}
        assert not found, f"{path.name} imports {found}"


def test_the_dev_server_and_the_worker_process_are_started_in_one_place() -> None:
    starters = {"start-dev": set(), '"-m", "worker"': set()}
    for folder in ("stack", "tests", "benchmarks", "web", "cli", "worker"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for needle, where in starters.items():
                if needle in text and path.name != "test_harness.py":
                    where.add(str(path.relative_to(ROOT)))
    assert starters["start-dev"] == {"stack/harness.py"}
    assert starters['"-m", "worker"'] <= {"stack/harness.py", "tests/test_worker_start.py",
                                          "tests/test_production_topology.py",
                                          "tests/test_temporal_tls.py", "tests/test_pg_roles.py"}


def test_wait_for_port_sees_a_listener_and_stop_process_ends_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, what="a test server", seconds=30)
    finally:
        stop_process(server, 10)
    assert server.returncode is not None
