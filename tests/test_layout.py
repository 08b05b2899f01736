"""The layout rules of the code base (CONTRIBUTING.md), checked on the source with `ast` (nothing is imported):

- imports follow the data flow: a package imports only from itself and the packages before it
  (`data_contracts`, `curation` < `labeling` < `training` < `api` < `cli`);
- no private name (`_name`) is imported from another module, nor read as `module._name` through an imported module;
  a package's private module (`curation/_dedup_kernels.py`) is imported by its own package only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the data flow: a package may import from packages of the same or a lower rank
RANK = {"data_contracts": 0, "curation": 0, "labeling": 1, "training": 2, "api": 3, "cli": 4}
# code outside the product packages: it may import any product package, but no private names either
OUTSIDE = ("tests", "benchmarks", "experiments", "examples")

# justified exceptions: (file, imported module or its local name, private name)
ALLOWED_PRIVATE: set[tuple[str, str, str | None]] = {
    # the case-folding table is the kernel's data, checked against Python's own casefold()
    ("tests/test_normalize.py", "curation._casefold", "FOLD"),
    # the optional numba kernels against the numpy path: the test asks the loader whether numba is there
    ("tests/test_dedup.py", "dedup", "_numba_kernels"),
}


def _modules(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    pkg = rel.split("/")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    out: list[str] = []
    module_aliases: set[str] = set()       # local names bound to a product module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(a.name, None, a.asname) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [(node.module, a.name, a.asname) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(f"{rel}:{node.lineno}: relative import (use absolute imports)")
            continue
        else:
            continue
        for module, name, asname in targets:
            top = module.split(".")[0]
            if top not in RANK:
                continue
            where = f"{rel}:{node.lineno}: {module}" + (f".{name}" if name else "")
            if pkg in RANK and RANK[top] > RANK[pkg]:
                out.append(f"{where}: {pkg} imports from {top}, which comes after it in the data flow")
            if (rel, module, name) in ALLOWED_PRIVATE:
                continue
            parts = module.split(".") + ([name] if name else [])
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])      # the package holding this private part
                if _private(part) and not (_is_module(".".join(parts[:i + 1])) and rel.startswith(
                        owner.replace(".", "/") + "/")):
                    out.append(f"{where}: private name {part!r} used outside its module")
                    break
            if name is None and asname:
                module_aliases.add(asname)
            elif name is not None and _is_module(f"{module}.{name}"):
                module_aliases.add(asname or name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in module_aliases and (rel, node.value.id, node.attr) not in ALLOWED_PRIVATE:
            out.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}: private name used outside its module")
    return out


@pytest.mark.parametrize("top", [*RANK, *OUTSIDE])
def test_imports_follow_the_flow_and_keep_private_names_private(top):
    found = [v for p in _modules(top) for v in violations(p)]
    assert not found, "\n".join(found)
