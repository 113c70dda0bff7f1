"""A notebook that renders from a populated store imports only what it uses.

Why: a render that only reads stored results spent 2.5-4.3 s of its ~7 s importing torch, transformers,
peft, scikit-learn, fairlearn and datasets through the stage modules, ~86 renders per run. Those
packages are now imported inside the functions that compute with them; the stage modules import them
only for type hints, under ``if TYPE_CHECKING:``. Checked without timing: which packages a fresh
interpreter holds after importing every module a notebook's import cell imports, and, statically, that
no code runs a name its module imports only for type checking (it would be a NameError at run time).
"""

from __future__ import annotations

import ast
import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "biasutils"

# every module the notebooks' import cells import (notebooks/0*.ipynb)
NOTEBOOK_MODULES = (
    "biasutils.mix", "biasutils.finetune", "biasutils.evaluate", "biasutils.misalign", "biasutils.generate",
    "biasutils.report", "biasutils.data", "biasutils.corpus", "biasutils.benchmarks", "biasutils.inheritance",
    "biasutils.config", "biasutils.store",
)
# imported only by the functions that compute with them
DEFERRED = ("torch", "transformers", "peft", "sklearn", "fairlearn", "sentence_transformers", "datasets")


def test_importing_the_stage_modules_loads_no_deferred_package() -> None:
    code = (
        "import json, sys\n"
        f"import {', '.join(NOTEBOOK_MODULES)}\n"
        f"print(json.dumps(sorted(name for name in {list(DEFERRED)!r} if name in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_notebook_modules_import_cleanly_one_by_one() -> None:
    """Each alone, too: a module must not rely on another having imported a package first."""
    for module in NOTEBOOK_MODULES:
        code = f"import json, sys, {module}\nprint(json.dumps(sorted(n for n in {list(DEFERRED)!r} if n in sys.modules)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == [], module


# ---------------------------------------------------------------------------------------------- static check
# With the packages imported inside functions, a function that uses one without importing it fails only
# when it runs, which a render from a populated store never does. This check finds such uses statically:
# every name that code loads at run time must be bound by the function (or an enclosing one), at module
# level outside ``if TYPE_CHECKING:``, or be a builtin. Annotations never run (``from __future__ import
# annotations``).

MODULE_DUNDERS = {"__file__", "__name__", "__doc__", "__spec__", "__package__", "__loader__", "__path__", "__builtins__"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _bound_names(node: ast.Import | ast.ImportFrom) -> set[str]:
    """Names an import statement binds."""
    return {(alias.asname or alias.name.split(".")[0]) for alias in node.names}


def _scope_bindings(body: list[ast.stmt]) -> set[str]:
    """Names a scope binds in its own statements (nested functions and classes bind only their name)."""
    names: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= _bound_names(node)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names |= set(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return names


def _function_bindings(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    args = function.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    body = function.body if isinstance(function.body, list) else [ast.Expr(function.body)]
    return names | _scope_bindings(body)


def _global_names(tree: ast.Module) -> set[str]:
    """Names a ``global`` statement in any function binds at module level."""
    return {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}


def _unbound_runtime_loads(node: ast.AST, bound: frozenset[str], found: list[tuple[int, str]]) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        # decorators and defaults run in the enclosing scope; annotations never run
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                _unbound_runtime_loads(decorator, bound, found)
        for default in (*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)):
            _unbound_runtime_loads(default, bound, found)
        inner = frozenset(bound | _function_bindings(node))
        for child in node.body if isinstance(node.body, list) else [node.body]:
            _unbound_runtime_loads(child, inner, found)
        return
    if isinstance(node, ast.ClassDef):
        for child in (*node.decorator_list, *node.bases, *node.keywords):
            _unbound_runtime_loads(child, bound, found)
        inner = frozenset(bound | _scope_bindings(node.body))  # generous: methods do not see class names
        for child in node.body:
            _unbound_runtime_loads(child, inner, found)
        return
    if isinstance(node, ast.AnnAssign):
        for child in (node.target, node.value):
            if child is not None:
                _unbound_runtime_loads(child, bound, found)
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            _unbound_runtime_loads(child, bound, found)
        return
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound:
        found.append((node.lineno, node.id))
    for child in ast.iter_child_nodes(node):
        _unbound_runtime_loads(child, bound, found)


def unbound_runtime_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of every name loaded at run time that nothing binds outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(source)
    bound = frozenset(_scope_bindings(tree.body) | _global_names(tree) | set(dir(builtins)) | MODULE_DUNDERS)
    found: list[tuple[int, str]] = []
    for node in tree.body:
        _unbound_runtime_loads(node, bound, found)
    return sorted(found)


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_every_name_that_runs_is_imported_where_it_runs(path: Path) -> None:
    found = unbound_runtime_names(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name}: names used at run time that are not imported there (import them in the function): {found}"


def test_the_static_check_sees_a_missing_import() -> None:
    """The check itself: uses of a package imported for type hints only, or not at all, are found."""
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "def ok(x: torch.Tensor) -> torch.Tensor:\n    import torch\n    return torch.zeros(1)\n"
        "def nested() -> None:\n    import torch\n    def inner() -> None:\n        torch.ones(1)\n"
        "def bad(x: torch.Tensor) -> None:\n    return torch.zeros(1)\n"
        "def worse() -> None:\n    try:\n        pass\n    except ValueError as error:\n        print(error)\n"
        "    return MetricFrame()\n"
    )
    assert unbound_runtime_names(source) == [(13, "torch"), (19, "MetricFrame")]
