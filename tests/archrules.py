"""The package's house rules read from its source with ast: import cycles, imports inside functions, module size, docstrings.

Used by tests/test_architecture.py on fbn_prune and on small fake packages (so each rule can be seen to fail).
Nothing is imported: every module is parsed, never run. ``scan(PKGDIR)`` reads a package once; each rule is a
function of the scan that returns its violations as readable lines (empty: the rule holds).
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINES = 450
"""No module over this many lines (issue 13)."""

LAZY_ALLOWED = frozenset({
    "lm_eval",  # evaluation only; imports torch, datasets, transformers and its task registry (seconds)
    "matplotlib",  # pictures only (inspect --plot, search's picture)
    "peft",  # LoRA healing only
    "gguf",  # the gguf extra: GGUF export and loading .gguf files only
    "datasets",  # hf: calibration sources only; pulls pyarrow and pandas
    "huggingface_hub",  # Hub reads and pushes only
    "sklearn",  # FastICA only; seconds to import
    "scipy",  # paired statistics only; scipy.stats takes most of a second
    "transformers",  # loading real models only; keeps --help, recipes and inspect fast
    "accelerate",  # empty-weight models and offloaded placement only
})
"""Third-party packages a function may import (optional or heavy); every other third-party import sits at the
top of its module. Each such import line carries a comment saying why (the same line or the line above)."""

OPTIONAL_WRAPPERS = {"fbn_prune.export.gguf": "gguf"}
"""Package modules that exist to use an optional extra (module -> the extra's package): the one kind of package
import a function may make, so that every command but the one that needs the extra runs without it. The line
carries a comment saying why, as lazy third-party imports do."""

SKIP_PARTS = ("templates",)
"""Folders whose .py files are not package modules (export/templates: a loader copied into checkpoints)."""


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen from a module."""

    module: str  # the importing module, dotted (fbn_prune.select.scores)
    line: int  # 1-based line of the statement
    target: str  # the imported module, dotted; for fbn_prune targets, the deepest module that exists
    internal: bool  # the target is in the package (absolute or relative import)
    relative: bool  # written as a relative import (from . import x)
    function: str | None  # the innermost enclosing function's name, None at module or class level
    commented: bool  # a comment on the statement's first line or on the line above it


@dataclass
class Package:
    """A package read from disk: its modules (dotted name -> file) and every import statement in them."""

    root: Path
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)
    trees: dict[str, ast.Module] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name

    def __repr__(self) -> str:  # short, for pytest's failure report
        return f"Package({self.root}, {len(self.modules)} modules, {len(self.imports)} imports)"


def _modname(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _comment_lines(source: str) -> set[int]:
    """Line numbers (1-based) that hold a comment."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            lines.add(tok.start[0])
    return lines


def scan(root: Path | str) -> Package:
    """Parse every module of the package at ``root`` (a folder with __init__.py) and collect its imports."""
    root = Path(root).resolve()
    pkg = Package(root)
    for path in sorted(root.rglob("*.py")):
        if any(part in SKIP_PARTS for part in path.relative_to(root).parts):
            continue
        pkg.modules[_modname(root, path)] = path
    for mod, path in pkg.modules.items():
        source = path.read_text()
        tree = ast.parse(source, filename=str(path))
        pkg.trees[mod] = tree
        comments = _comment_lines(source)
        is_pkg = path.name == "__init__.py"

        def visit(node: ast.AST, function: str | None) -> None:
            for child in ast.iter_child_nodes(node):
                inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
                commented = getattr(child, "lineno", 0) in comments or getattr(child, "lineno", 0) - 1 in comments
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target, internal, relative in _targets(pkg, mod, is_pkg, child):
                        pkg.imports.append(Import(mod, child.lineno, target, internal, relative, function, commented))
                elif (dynamic := _dynamic_target(pkg, child)) is not None:  # importlib.import_module("fbn_prune.x")
                    pkg.imports.append(Import(mod, child.lineno, dynamic, True, False, function, commented))
                visit(child, inner)

        visit(tree, None)
    return pkg


def _targets(pkg: Package, mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom):
    """(target, internal, relative) for each module one import statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            internal = alias.name == pkg.name or alias.name.startswith(pkg.name + ".")
            yield (_existing(pkg, alias.name) if internal else alias.name), internal, False
        return
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    internal = bool(node.level) or target == pkg.name or target.startswith(pkg.name + ".")
    if not internal:
        yield target, False, False
        return
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in pkg.modules]
    for t in subs or [target]:
        yield _existing(pkg, t), True, bool(node.level)


def _dynamic_target(pkg: Package, node: ast.AST) -> str | None:
    """The package module named by ``importlib.import_module("...")`` or ``__import__("...")``; None otherwise."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    func = ast.unparse(node.func)
    name = node.args[0].value
    if func not in ("importlib.import_module", "import_module", "__import__") or not isinstance(name, str):
        return None
    if name == pkg.name or name.startswith(pkg.name + "."):
        return _existing(pkg, name)
    return None


def _existing(pkg: Package, target: str) -> str:
    """The deepest module of the package that ``target`` names (a function's dotted path -> its module)."""
    while target not in pkg.modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def graph(pkg: Package) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in it, functions included)."""
    edges: dict[str, set[str]] = {m: set() for m in pkg.modules}
    for imp in pkg.imports:
        if imp.internal and imp.target != imp.module and imp.target in pkg.modules:
            edges[imp.module].add(imp.target)
    return edges


def cycles(pkg: Package) -> list[str]:
    """Each group of modules that import each other (a strongly connected component of more than one
    module, or a module importing itself), with one import per edge inside the group as evidence."""
    edges = graph(pkg)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 10 * len(edges) + 100))

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    try:
        for v in sorted(edges):
            if v not in index:
                strongconnect(v)
    finally:
        sys.setrecursionlimit(old_limit)
    out = []
    for group in groups:
        members = set(group)
        evidence = sorted({f"{i.module}:{i.line} -> {i.target}" for i in pkg.imports
                           if i.internal and i.module in members and i.target in members and i.target != i.module})
        out.append(" <-> ".join(group) + " (" + "; ".join(evidence) + ")")
    return out


def nested_internal_imports(pkg: Package, wrappers: dict[str, str] = OPTIONAL_WRAPPERS) -> list[str]:
    """Imports of the package (absolute or relative) inside a function or method, but for a commented import of
    a module of ``wrappers`` (it imports an optional extra)."""
    return [f"{i.module}:{i.line} in {i.function}(): imports {i.target}" + (" (relative)" if i.relative else "")
            for i in pkg.imports if i.function and (i.internal or i.relative)
            and not (i.target in wrappers and i.commented)]


def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def nested_third_party_imports(pkg: Package, allowed: frozenset[str] = LAZY_ALLOWED) -> list[str]:
    """Third-party imports inside functions that are not from ``allowed``, or that no comment explains.

    One comment explains every import of the same package within one function (``import matplotlib  # heavy``
    then ``import matplotlib.pyplot as plt`` two lines later)."""
    nested = [i for i in pkg.imports if i.function and not i.internal and not _stdlib(i.target)]
    explained = {(i.module, i.function, i.target.split(".")[0]) for i in nested if i.commented}
    out = []
    for i in nested:
        top = i.target.split(".")[0]
        if top not in allowed:
            out.append(f"{i.module}:{i.line} in {i.function}(): imports {i.target}, which is neither optional nor "
                       "heavy: import it at the top of the module")
        elif (i.module, i.function, top) not in explained:
            out.append(f"{i.module}:{i.line} in {i.function}(): imports {i.target} with no comment saying why")
    return out


def long_modules(pkg: Package, limit: int = MAX_LINES) -> list[str]:
    """Modules over ``limit`` lines."""
    sizes = {m: len(p.read_text().splitlines()) for m, p in pkg.modules.items()}
    return [f"{m}: {n} lines (limit {limit})" for m, n in sorted(sizes.items(), key=lambda kv: -kv[1]) if n > limit]


def summary_line(pkg: Package, module: str) -> str | None:
    """The first line of a module's docstring, stripped; None without a docstring."""
    doc = ast.get_docstring(pkg.trees[module])
    if not doc or not doc.strip():
        return None
    return doc.strip().splitlines()[0].strip()


def bad_docstrings(pkg: Package) -> list[str]:
    """Modules without a docstring whose first line is a whole sentence saying the module's job: at least three
    words (not just the module's name) and ending with a full stop, as PEP 257's summary line."""
    out = []
    for mod in sorted(pkg.modules):
        first = summary_line(pkg, mod)
        if first is None:
            out.append(f"{mod}: no module docstring")
        elif len(first.split()) < 3:
            out.append(f"{mod}: the docstring's first line {first!r} does not say what the module does")
        elif not first.endswith("."):
            out.append(f"{mod}: the docstring's first line is not a whole sentence: {first!r}")
    return out
