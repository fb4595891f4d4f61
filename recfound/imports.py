"""Who imports whom inside this repository, read statically from the source (ast, nothing run).

Two questions need it. Which files does a stage's code consist of: every module its entry module
imports, directly or not, anywhere in a body (an import inside a function runs when the stage
calls it), with each module's packages, whose `__init__.py` runs first (`import_closure`: the
code deps of dvc.yaml, recfound.dvc_yaml). And do the modules import each other in a circle
(`import_cycles`): by default only imports that run when a module is loaded count, those outside
function bodies (`if TYPE_CHECKING:` blocks included: a circle a type checker must resolve is a
circle in the design); there a module's parent packages are no edge (`a.b` does not import `a`).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGES = ("recfound",)


def module_file(root: Path, dotted: str) -> Path | None:
    """The file that defines module `dotted` under `root` (a package: its __init__.py)."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_path(root: Path, dotted: str) -> str:
    """`dotted`'s file relative to `root`, as dvc.yaml spells a dep (`recfound/config.py`)."""
    path = module_file(root, dotted)
    if path is None:
        raise ValueError(f"no module {dotted} under {root}")
    return path.relative_to(root).as_posix()


def with_parents(dotted: str) -> list[str]:
    """`a.b.c` -> [a, a.b, a.b.c]: importing a module runs its packages' __init__ first."""
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _import_nodes(tree: ast.AST, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of `tree`; with `module_level`, none inside a function body."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(
    root: Path,
    dotted: str,
    packages: Iterable[str] = PACKAGES,
    module_level: bool = False,
    parents: bool = True,
) -> list[str]:
    """The modules of `packages` under `root` that module `dotted` imports, in source order.

    `from pkg import name` imports `pkg.name` when such a module exists (with `parents`, `pkg`
    too), else `pkg` itself. With `module_level`, only imports outside function bodies. With
    `parents`, each import comes with its parent packages (`with_parents`), whose __init__.py
    runs first.
    """
    path = module_file(root, dotted)
    if path is None:
        raise ValueError(f"no module {dotted} under {root}")
    is_package = path.name == "__init__.py"
    prefixes = tuple(packages)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    nodes = sorted(_import_nodes(tree, module_level), key=lambda n: (n.lineno, n.col_offset))
    found: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: resolve against this module's package
                anchor = dotted.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = [f"{base}.{a.name}" for a in node.names if module_file(root, f"{base}.{a.name}")]
            names = subs if not parents and len(subs) == len(node.names) else [base, *subs]
        for name in names:
            if not any(name == p or name.startswith(p + ".") for p in prefixes):
                continue
            candidates = with_parents(name) if parents else [name]
            found.extend(m for m in candidates if module_file(root, m) and m != dotted)
    return list(dict.fromkeys(found))


def import_closure(
    root: Path, entry: str, packages: Iterable[str] = PACKAGES
) -> dict[str, tuple[str, ...]]:
    """Every module of `packages` that `entry` imports, directly or not (imports inside
    functions too), with one shortest import chain to it; `entry` and its packages included."""
    packages = tuple(packages)
    chains: dict[str, tuple[str, ...]] = {}
    queue: deque[tuple[str, tuple[str, ...]]] = deque(
        (m, (entry,) if m == entry else (entry, m))
        for m in with_parents(entry)
        if module_file(root, m)
    )
    while queue:
        module, chain = queue.popleft()
        if module in chains:
            continue
        chains[module] = chain
        for imported in imported_modules(root, module, packages):
            if imported not in chains:
                queue.append((imported, (*chain, imported)))
    return chains


def modules_under(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Every module (.py file) of `packages` under `root`, dotted, sorted."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(found)


def import_cycles(
    root: Path, packages: Iterable[str] = PACKAGES, module_level: bool = True
) -> list[list[str]]:
    """The circles of imports among `packages` (`module_level`: only those that run when a
    module loads; otherwise imports inside functions too): one per strongly connected group of
    modules, as a shortest chain `a -> b -> ... -> a`, sorted so that a report is stable."""
    packages = tuple(packages)
    graph = {
        m: imported_modules(root, m, packages, module_level=module_level, parents=False)
        for m in modules_under(root, packages)
    }
    cycles = []
    for group in _strongly_connected(graph):
        if len(group) > 1 or group[0] in graph[group[0]]:
            cycles.append(_one_cycle(graph, min(group), set(group)))
    return sorted(cycles)


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (deep chains need no recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
    return groups


def _one_cycle(graph: dict[str, list[str]], start: str, group: set[str]) -> list[str]:
    """A shortest path from `start` back to itself inside `group` (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph[node]:
            if nxt not in group:
                continue
            if nxt == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return [start, *reversed(chain[:-1]), start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return [start, start]
