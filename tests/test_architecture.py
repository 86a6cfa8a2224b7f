"""The package's shape, read from the source with ``ast``: no import cycles (function-level
imports count), no streamlit in the core, pages that import only the facade and the views and do
not reach past the facade into the services behind it, a reason beside every deferred import of
the core's own modules, and comments that stand alone without notes kept outside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "dmac_core"
PAGES = ROOT / "pages"
# What a page may import from the core: the facade (``dmac_core.system``, and the package root
# that builds it) and the tables and figures made for pages.
PAGE_IMPORTS = re.compile(r"^dmac_core(\.system|\.views(\.\w+)?)?$")
# Services the facade owns; pages call its verbs instead of these.
BEHIND_THE_FACADE = {"store", "registry", "jobs", "model_manager", "backends", "local_backend", "gate",
                     "scheduler", "confidence"}
# A deferred import says why it is deferred (start-up time, an optional SDK) next to it.
REASON = re.compile(r"start-up|lazily|imported when|only when", re.IGNORECASE)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement refers to (a module, or a module's attribute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if node.level:
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def _core_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py")}


def _import_graph() -> dict[str, set[str]]:
    modules = _core_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # every import, at any depth
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(t for t in _targets(name, path, node) if t in modules and t != name)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_has_no_import_cycles_even_through_function_level_imports() -> None:
    assert _cycles(_import_graph()) == []


def test_the_core_never_imports_streamlit() -> None:
    offenders = []
    for name, path in _core_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if any(t.split(".")[0] == "streamlit" for t in _targets(name, path, node)):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_pages_import_only_the_facade_and_the_views_and_call_its_verbs() -> None:
    wrong_imports, reaching = [], []
    for path in sorted(PAGES.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dmac_core"):
                if not PAGE_IMPORTS.match(node.module or ""):
                    wrong_imports.append(f"{path.name}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                wrong_imports += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("dmac_core")]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "system"
                  and node.attr in BEHIND_THE_FACADE):
                reaching.append(f"{path.name}:{node.lineno} system.{node.attr}")
    assert wrong_imports == []
    assert reaching == []


def test_every_deferred_import_of_the_core_says_why() -> None:
    silent = []
    for name, path in _core_modules().items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                if not any(t.startswith("dmac_core") for t in _targets(name, path, node)):
                    continue  # third-party libraries imported where used (torch, SDKs): not a layering question
                # the reason: on the line itself or in the comments and imports just above it
                above = node.lineno - 1
                context = [lines[node.lineno - 1]]
                while above >= 1 and (lines[above - 1].strip().startswith(("#", "from ", "import ")) or not lines[above - 1].strip()):
                    context.append(lines[above - 1])
                    above -= 1
                if not any(REASON.search(line) for line in context if "#" in line):
                    silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert silent == []


def test_comments_and_docs_stand_alone() -> None:
    """Nothing points to tracker numbers or to notes a holder of the repository does not have:
    every Markdown document named is one the repository holds."""
    tracker = re.compile(r"\b[Ii]ssue #?\d+|\bticket #?\d+|\b[A-Z]+-NOTES\b")
    document = re.compile(r"\b[A-Z][\w-]*\.md\b")  # documents (bench outputs are lower-case)
    held = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    checked = [*CORE.rglob("*.py"), *PAGES.glob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py"),
               *(ROOT / "scripts").glob("*.py"), ROOT / "app.py", ROOT / "README.md", ROOT / "bench" / "RESULTS.md",
               ROOT / "Makefile"]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in checked
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if tracker.search(line) or set(document.findall(line)) - held]
    assert hits == []
