"""The import graph of the package: cycles between files or packages, and imports that go up the layers.

Every ``import`` statement counts, function-level ones included (a cycle held together by a deferred import is still
a cycle a reader has to untangle); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.

Two graphs are checked:
  * **files**: module A -> module B when A imports B (``from pkg import name`` points at ``pkg.name`` when that is a
    module, else at ``pkg``);
  * **packages**: for every file edge A -> B, the first components where the two dotted names differ are joined
    (``fourdnex_jax.data.encode -> fourdnex_jax.models.vae.model`` gives ``data -> models``), at every depth, so a
    cycle between two sibling folders shows even when no two files form one.

:data:`LAYERS` is the dependency order of the top-level rooms, highest first; a room may import only rooms in lower
layers or its own. ``python -m fourdnex_jax.testing.import_graph`` prints the violations and exits 1 if any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "fourdnex_jax"

#: Top-level rooms of ``fourdnex_jax``, highest layer first. A room imports only rooms of later (lower) layers, or
#: itself: two rooms of one layer never import each other (training does not import the pipelines, nor they it).
#: ``testing`` (test helpers, the torch oracle) sits above every product room, so no product code depends on it: it
#: is imported by tests, benchmarks and the developer commands (``dev``: tiny-bundle building, fixture recording,
#: ``python -m fourdnex_jax.dev``) only; the user's command line (``cli``) is below it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__main__"}),
    frozenset({"dev"}),
    frozenset({"testing"}),
    frozenset({"cli"}),
    frozenset({"training", "pipelines"}),
    frozenset({"data", "sampling", "weights"}),
    frozenset({"geometry"}),
    frozenset({"config"}),  # validates its enumerated values against the recipe's presets
    frozenset({"recipe"}),
    frozenset({"models"}),
    frozenset({"ops"}),  # reads its mesh axis names from `sharding`
    frozenset({"sharding", "media"}),
    frozenset({"utils"}),  # the error types (utils/errors.py) every room raises, readers in media included
)


def module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path`` (a ``.py`` file under ``root``, the folder holding the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def file_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """{module: modules of ``package`` it imports} over every ``.py`` file of ``root/package``."""
    files = sorted((root / package).rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:  # `import a.b.c` of a name inside a module: its module
                    t = t.rpartition(".")[0]
                if t and t != name and t.split(".")[0] == package:
                    graph[name].add(t)
    return graph


def package_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Edges between sibling packages/modules implied by the file edges (see the module docstring)."""
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        pa = a.split(".")
        for b in targets:
            pb = b.split(".")
            d = 0
            while d < min(len(pa), len(pb)) and pa[d] == pb[d]:
                d += 1
            if d == len(pa) or d == len(pb):  # one contains the other (a package and its own modules)
                continue
            out.setdefault(".".join(pa[: d + 1]), set()).add(".".join(pb[: d + 1]))
    return out


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    result.append(sorted(comp))
    return sorted(result)


#: File edges tolerated against :data:`LAYERS` until the named change lands: ``{(importer, imported): why}``. Each
#: must still exist (a stale entry is reported), so the list only shrinks.
TEMPORARY_EXCEPTIONS: dict[tuple[str, str], str] = {}


def layer_violations(graph: Mapping[str, set[str]], package: str = PACKAGE,
                     exceptions: Mapping[tuple[str, str], str] | None = None) -> list[str]:
    """File edges that go from a lower room to a higher one or across one layer (or into a room missing from
    :data:`LAYERS`), but for ``exceptions`` (default :data:`TEMPORARY_EXCEPTIONS` when checking this package)."""
    if exceptions is None:
        exceptions = TEMPORARY_EXCEPTIONS if package == PACKAGE else {}
    rank = {room: i for i, layer in enumerate(LAYERS) for room in layer}
    bad = [f"{a} -> {b}: listed in TEMPORARY_EXCEPTIONS but no longer imported; remove the entry"
           for a, b in sorted(exceptions) if a in graph and b not in graph[a]]
    for a, targets in sorted(graph.items()):
        ra = a.split(".")[1] if a.count(".") else None
        for b in sorted(targets):
            if (a, b) in exceptions:
                continue
            rb = b.split(".")[1] if b.count(".") else None
            if ra is None or rb is None or ra == rb:
                continue
            if ra not in rank or rb not in rank:
                bad.append(f"{a} -> {b}: room {ra if ra not in rank else rb!r} is not in LAYERS")
            elif rank[rb] < rank[ra]:
                bad.append(f"{a} -> {b}: {ra!r} is below {rb!r}")
            elif rank[rb] == rank[ra]:
                bad.append(f"{a} -> {b}: {ra!r} and {rb!r} are one layer (neither may import the other)")
    return bad


def report(root: Path) -> list[str]:
    """Every problem as one line (empty when the graph is clean)."""
    graph = file_graph(root)
    lines = [f"file cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    lines += [f"package cycle: {' <-> '.join(c)}" for c in cycles(package_graph(graph))]
    lines += [f"layering: {v}" for v in layer_violations(graph)]
    return lines


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    problems = report(root)
    for line in problems:
        print(line)
    graph = file_graph(root)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports: "
          f"{len(problems)} problem(s)" if problems else
          f"{len(graph)} modules, {sum(map(len, graph.values()))} imports: no cycle, layering respected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
