"""The daemon's modules import one way: no module imports, even lazily inside a
function, a module that imports it back. A circle hid two concerns in two
places (app/workers, store/raw_io); this fails on a new one and names it."""
import ast
from pathlib import Path

DAEMON = Path(__file__).resolve().parents[1] / "daemon"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(DAEMON.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The daemon modules `path` imports anywhere but under `if TYPE_CHECKING:`."""
    tree, found = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []          # before ast.walk below reaches the imports under it
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & modules


def test_no_import_circle_among_daemon_modules():
    paths = {module_name(p): p for p in DAEMON.rglob("*.py") if "migrations" not in p.parts}
    graph = {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}
    circles = []
    for start in graph:                 # a walk from each module back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            name, trail = stack.pop()
            for nxt in graph[name]:
                if nxt == start:
                    circles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles)))
