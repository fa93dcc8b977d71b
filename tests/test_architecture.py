"""The house rules (issue 13) as tests: no import cycles, package imports only at module top, lazy third-party
imports only for optional or heavy packages and explained, no module over 450 lines, a docstring that says each
module's job, and the import-linter layers. The rules live in tests/archrules.py; the second half of this file feeds
them small fake packages so each rule is seen to fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archrules as rules

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fbn_prune"


@pytest.fixture(scope="module")
def pkg() -> rules.Package:
    return rules.scan(PACKAGE)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} found:\n  " + "\n  ".join(problems)


def test_the_scan_sees_the_whole_package(pkg):
    assert {"fbn_prune", "fbn_prune.cli.main", "fbn_prune.errors"} <= set(pkg.modules)
    assert not [m for m in pkg.modules if "templates" in m]  # a loader copied into checkpoints, not a module
    assert any(i.internal and i.function is None for i in pkg.imports)


def test_no_import_cycles_counting_imports_inside_functions(pkg):
    problems = rules.cycles(pkg)
    assert not problems, "modules that import each other: " + _report(problems)


def test_no_package_import_inside_a_function(pkg):
    problems = rules.nested_internal_imports(pkg)
    assert not problems, ("import fbn_prune modules at the top; if that makes a cycle, the code is in the wrong "
                          "layer: " + _report(problems))


def test_lazy_third_party_imports_are_optional_or_heavy_and_say_why(pkg):
    problems = rules.nested_third_party_imports(pkg)
    assert not problems, _report(problems)


def test_no_module_over_450_lines(pkg):
    problems = rules.long_modules(pkg)
    assert not problems, _report(problems)


def test_every_module_has_a_docstring_saying_its_job(pkg):
    problems = rules.bad_docstrings(pkg)
    assert not problems, _report(problems)


def test_import_linter_layers_hold():
    """`lint-imports` (pyproject's [tool.importlinter]), from the environment running the tests."""
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.skip(f"import-linter is not installed beside {sys.executable} (the dev extra installs it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", r.stdout), r.stdout[-2000:]


# --- each rule fails when broken: small fake packages --------------------------------------------------------


def fake(tmp_path: Path, files: dict[str, str], name: str = "fakepkg") -> rules.Package:
    """A package ``name`` under tmp_path with the given files (relative path -> source), then scanned."""
    root = tmp_path / name
    for rel, source in {"__init__.py": '"""A fake package for the rule tests."""\n', **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return rules.scan(root)


DOC = '"""A module of the fake package."""\n'


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    pkg = fake(tmp_path, {
        "a.py": DOC + "from fakepkg import b\n",
        "b.py": DOC + "def f():\n    from fakepkg.a import g\n    return g\n",
        "c.py": DOC + "import fakepkg.a\n",  # imports into the cycle, not part of it
    })
    found = rules.cycles(pkg)
    assert len(found) == 1 and found[0].startswith("fakepkg.a <-> fakepkg.b (")
    assert "fakepkg.b:3 -> fakepkg.a" in found[0] and "fakepkg.c" not in found[0]


def test_a_cycle_through_relative_imports_and_a_package_init_is_found(tmp_path):
    pkg = fake(tmp_path, {
        "sub/__init__.py": DOC + "from .x import X\n",
        "sub/x.py": DOC + "from .. import top\nX = 1\n",
        "top.py": DOC + "from fakepkg.sub import X\n",
    })
    assert rules.cycles(pkg) and "fakepkg.sub.x" in rules.cycles(pkg)[0]


def test_no_cycle_in_a_layered_package(tmp_path):
    pkg = fake(tmp_path, {"a.py": DOC + "from fakepkg import b\n", "b.py": DOC + "import os\n"})
    assert rules.cycles(pkg) == []


def test_package_imports_inside_functions_and_methods_are_found(tmp_path):
    pkg = fake(tmp_path, {
        "a.py": DOC + "import fakepkg.b\n",  # at the top: fine
        "b.py": DOC + textwrap.dedent("""\
            def f():
                import fakepkg.a
            class K:
                def m(self):
                    from . import a
            async def g():
                from fakepkg import a
            def h():
                import importlib
                return importlib.import_module("fakepkg.a.thing"), importlib.import_module("json")
            """),
    })
    found = rules.nested_internal_imports(pkg)
    assert found == ["fakepkg.b:3 in f(): imports fakepkg.a",
                     "fakepkg.b:6 in m(): imports fakepkg.a (relative)",
                     "fakepkg.b:8 in g(): imports fakepkg.a",
                     "fakepkg.b:11 in h(): imports fakepkg.a"]
    assert [c.split(" (")[0] for c in rules.cycles(pkg)] == ["fakepkg.a <-> fakepkg.b"]


def test_a_module_wrapping_an_optional_extra_may_be_imported_late_with_a_reason(tmp_path):
    pkg = fake(tmp_path, {
        "extra.py": DOC + "import somextra\n",
        "cli.py": DOC + textwrap.dedent("""\
            def write():
                from fakepkg import extra  # optional extra: only this command needs it
            def other():
                from fakepkg import extra
            """),
    })
    assert rules.nested_internal_imports(pkg, wrappers={"fakepkg.extra": "somextra"}) == \
        ["fakepkg.cli:5 in other(): imports fakepkg.extra"]
    assert len(rules.nested_internal_imports(pkg, wrappers={})) == 2


def test_lazy_third_party_imports_need_the_allow_list_and_a_comment(tmp_path):
    pkg = fake(tmp_path, {"a.py": DOC + textwrap.dedent("""\
        import yaml  # at the top: any package, no comment needed

        def ok():
            # heavy: only pictures need it
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # explained once per package and function
            import json  # the standard library is not third-party
            from sklearn.decomposition import FastICA  # seconds to import
            return plt, json, FastICA

        def unexplained():
            import matplotlib

        def not_heavy():
            import yaml  # light; only here
        """)})
    found = rules.nested_third_party_imports(pkg)
    assert found == [
        "fakepkg.a:14 in unexplained(): imports matplotlib with no comment saying why",
        "fakepkg.a:17 in not_heavy(): imports yaml, which is neither optional nor heavy: import it at the top of the module",
    ]


def test_a_module_of_451_lines_is_too_long(tmp_path):
    pkg = fake(tmp_path, {"long.py": DOC + "x = 1\n" * 450, "short.py": DOC + "x = 1\n" * 449})
    assert rules.long_modules(pkg) == ["fakepkg.long: 451 lines (limit 450)"]


def test_docstrings_missing_empty_or_not_a_sentence_are_found(tmp_path):
    pkg = fake(tmp_path, {
        "none.py": "x = 1\n",
        "name.py": '"""name"""\n',
        "cut.py": '"""Reads the files, checks them and\nwrites the report."""\n',
        "good.py": '"""Read the files and write the report.\n\nMore text.\n"""\n',
    })
    assert rules.bad_docstrings(pkg) == [
        "fakepkg.cut: the docstring's first line is not a whole sentence: 'Reads the files, checks them and'",
        "fakepkg.name: the docstring's first line 'name' does not say what the module does",
        "fakepkg.none: no module docstring",
    ]
