"""The import graph of src/asymret keeps the layers of docs/architecture.md: no module imports
upward, no import cycle, and every module is placed in a layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def read_layers(doc: Path) -> dict[str, int]:
    """Module prefix → layer number, from the rows ``| <n> <name> | `mod`, ... | ... |``."""
    layers = {}
    for line in doc.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s[^|]*\|([^|]*)\|", line)
        if row:
            for module in re.findall(r"`([\w.]+)`", row.group(2)):
                layers[module] = int(row.group(1))
    return layers


def module_names(source: Path, package: str) -> dict[str, Path]:
    """Dotted name → file of every module under ``source/package``."""
    names = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(module: str, path: Path, modules: set[str], package: str) -> set[str]:
    """The modules of ``package`` that ``module`` imports, anywhere in its file (lazy imports
    inside functions included); ``from a import b`` counts as ``a.b`` when that is a module."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == package or t.startswith(package + "."))
    found.discard(module)
    return found


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    """The layer of the longest prefix of ``module`` in ``layers``."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in layers:
            return layers[prefix]
    return None


def graph_problems(source: Path, package: str, layers: dict[str, int]) -> list[str]:
    """Every unplaced module, upward import and import cycle, in words."""
    files = module_names(source, package)
    graph = {m: imports_of(m, p, set(files), package) for m, p in files.items()}
    problems = [f"{m} is in no layer of the architecture table"
                for m in graph if layer_of(m, layers) is None]
    for module, targets in sorted(graph.items()):
        here = layer_of(module, layers)
        for target in sorted(targets):
            there = layer_of(target, layers)
            if here is not None and there is not None and there > here:
                problems.append(f"{module} (layer {here}) imports {target} (layer {there})")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in find_cycles(graph)]
    return problems


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_keeps_the_documented_layers():
    layers = read_layers(REPOSITORY / "docs" / "architecture.md")
    assert len(set(layers.values())) >= 8, "the architecture table was not read"
    assert graph_problems(REPOSITORY / "src", "asymret", layers) == []


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_an_upward_import_a_cycle_and_an_unplaced_module(tmp_path):
    write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.high import g\n",
        "pkg/high.py": "from . import low\n",
        "pkg/sub/__init__.py": "from .a import x\n",
        "pkg/sub/a.py": "from pkg.sub import b\n",
        "pkg/sub/b.py": "import pkg.sub.a\n",
        "pkg/stray.py": "",
    })
    doc = tmp_path / "layers.md"
    doc.write_text("| layer | modules | owns |\n|---|---|---|\n"
                   "| 1 base | `pkg`, `pkg.low`, `pkg.sub` | x |\n| 2 top | `pkg.high` | y |\n")
    layers = read_layers(doc)
    assert layers == {"pkg": 1, "pkg.low": 1, "pkg.sub": 1, "pkg.high": 2}
    assert graph_problems(tmp_path, "pkg", layers) == [
        "pkg.low (layer 1) imports pkg.high (layer 2)",
        "import cycle: pkg.high -> pkg.low",
        "import cycle: pkg.sub.a -> pkg.sub.b",
    ]
    assert layer_of("pkg.stray", layers) == 1, "placed through its package"
    del layers["pkg"]
    unplaced = [p for p in graph_problems(tmp_path, "pkg", layers) if "no layer" in p]
    assert unplaced == ["pkg is in no layer of the architecture table",
                        "pkg.stray is in no layer of the architecture table"]
