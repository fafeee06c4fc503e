"""The package's layers: folders (and top-level modules) as rooms, each layer may import only from its own
layer or below, and no two rooms import each other even indirectly. Fails naming the offending import."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "facetrain"

# Lowest first. A room is a subpackage of facetrain or one of its top-level modules; "facetrain" is the
# package's own __init__ (the API facade). Every room must be listed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version", "devices", "fault_injection", "fingerprint"),  # no facetrain imports, or only of each other
    ("io_utils", "precision", "geometry", "image_grid", "option_checks"),  # small utilities
    ("data", "models"),  # dataset formats and tools; backbones
    ("checkpoint",),  # AdaFace-layout checkpoint files
    ("calibration_store",),  # decision thresholds stored with a model
    ("heads", "eval", "alignment", "export"),  # margin heads and Partial FC; evaluation; face alignment
    ("training", "infer", "synthetic", "hygiene"),  # training; using a model; synthetic faces; dataset checks
    ("report", "audit", "compare"),  # HTML reports; dataset audit; face comparison
    ("api", "demo"),  # the Python API; the demo
    ("commands", "cli", "__main__", "facetrain"),  # the command line; the package facade
)
LAYER_OF = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "facetrain"


def _module_name(path: Path) -> tuple[str, str]:
    """(the module's dotted name, the package its relative imports start from)."""
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        name = ".".join(parts[:-1])
        return name, name
    name = ".".join(parts)
    return name, name.rsplit(".", 1)[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported facetrain module) of every import in the file, lazy ones and TYPE_CHECKING ones too."""
    _, package = _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if node.module is None or module == "facetrain":  # `from facetrain import x`: x may be a room
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, name) for line, name in found if name == "facetrain" or name.startswith("facetrain.")]


def _target_room(name: str) -> str:
    """`facetrain.x` names room x only when x is a module or subpackage; else it is an attribute of the facade."""
    room = _room(name)
    if room != "facetrain" and not ((SOURCE / room).is_dir() or (SOURCE / f"{room}.py").is_file()):
        return "facetrain"
    return room


def import_edges() -> dict[tuple[str, str], list[str]]:
    """{(importing room, imported room): ["facetrain/x/y.py:12 imports facetrain.z.w", ...]} between rooms."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SOURCE.rglob("*.py")):
        source = _room(_module_name(path)[0])
        for line, name in _imports(path):
            target = _target_room(name)
            if target != source:
                edges[(source, target)].append(f"{path.relative_to(SOURCE.parent)}:{line} imports {name}")
    return edges


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(room: str) -> list[str] | None:
        state[room] = 1
        path.append(room)
        for nxt in sorted(graph[room]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[room] = 2
        return None

    for room in sorted(graph):
        if room not in state and (found := visit(room)):
            return found
    return None


def test_every_room_has_a_layer():
    rooms = {p.name for p in SOURCE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    rooms |= {p.stem for p in SOURCE.glob("*.py") if p.stem != "__init__"} | {"facetrain"}
    assert sorted(rooms - set(LAYER_OF)) == [], "add the new package or module to LAYERS"
    assert sorted(set(LAYER_OF) - rooms) == [], "LAYERS names rooms that no longer exist"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = [f"{where} ({a}, layer {LAYER_OF[a]} -> {b}, layer {LAYER_OF[b]})"
              for (a, b), sites in sorted(import_edges().items()) if LAYER_OF[b] > LAYER_OF[a] for where in sites]
    assert upward == [], "imports that run up the layers:\n" + "\n".join(upward)


def test_no_circle_between_rooms():
    edges = import_edges()
    cycle = _cycle(edges)
    if cycle:
        sites = [edges[(a, b)][0] for a, b in zip(cycle, cycle[1:])]
        pytest.fail("circular imports: " + " -> ".join(cycle) + "\n" + "\n".join(sites))


def test_no_circle_between_modules_of_a_package():
    """Inside a package too (module-level imports only: a local import inside a function is how a
    module reaches one that imports it back, e.g. a head and its checkpoint files)."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SOURCE.rglob("*.py")):
        name, package = _module_name(path)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facetrain."):
                if node.module != name and node.module.rsplit(".", 1)[0] == package:
                    edges[(name, node.module)].append(f"{path.relative_to(SOURCE.parent)}:{node.lineno}")
            elif isinstance(node, ast.If):  # TYPE_CHECKING blocks
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and inner.module and inner.module.startswith("facetrain."):
                        if inner.module != name and inner.module.rsplit(".", 1)[0] == package:
                            edges[(name, inner.module)].append(f"{path.relative_to(SOURCE.parent)}:{inner.lineno}")
    cycle = _cycle(edges)
    assert cycle is None, "circular imports: " + " -> ".join(cycle or [])


# Inside data/: untrusted-input guards, then the file formats, then the data verbs' tools; the training
# input ("." : the package's own modules) reads formats through the guards.
DATA_LAYERS = ("guards", "formats", "tools")


def test_data_subpackages_import_only_downward():
    upward = []
    for path in sorted((SOURCE / "data").rglob("*.py")):
        parts = path.relative_to(SOURCE / "data").parts
        source = parts[0] if len(parts) > 1 else "."
        for line, name in _imports(path):
            rest = name.split(".")[2:] if name.startswith("facetrain.data.") else []
            target = rest[0] if rest and rest[0] in DATA_LAYERS else None
            if target is None or target == source:
                continue
            if source == "." and target == "tools" or source in DATA_LAYERS and \
                    DATA_LAYERS.index(target) > DATA_LAYERS.index(source):
                upward.append(f"data/{path.relative_to(SOURCE / 'data')}:{line} imports {name}")
    assert sorted({p.name for p in (SOURCE / "data").iterdir() if p.is_dir() and (p / "__init__.py").exists()}) == \
        sorted(DATA_LAYERS), "add the new data subpackage to DATA_LAYERS"
    assert upward == [], "imports that run up data/'s layers:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The test itself works: a planted upward import and a planted circle are found and named."""
    fake = tmp_path / "facetrain"
    for folder, text in {"errors.py": "", "version.py": "", "data/__init__.py": "",
                         "data/bad.py": "from facetrain.training import loop\n", "training/__init__.py": "",
                         "training/loop.py": "import facetrain.data.bad\n"}.items():
        (fake / folder).parent.mkdir(parents=True, exist_ok=True)
        (fake / folder).write_text(text)
    monkeypatch.setattr(__import__(__name__), "SOURCE", fake)
    edges = import_edges()
    assert edges[("data", "training")] == ["facetrain/data/bad.py:1 imports facetrain.training"]
    assert LAYER_OF["training"] > LAYER_OF["data"]
    assert _cycle(edges) in (["data", "training", "data"], ["training", "data", "training"])


def test_no_code_outside_heads_asks_which_head_it_holds():
    """The full head and Partial FC answer the same calls, so nothing outside heads/ type-checks them."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.parent.name == "heads":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                if "PartialFC" in ast.unparse(node.args[1]) or "MarginHead" in ast.unparse(node.args[1]):
                    found.append(f"{path.relative_to(SOURCE.parent)}:{node.lineno}")
    assert found == [], "head type checks outside heads/: " + ", ".join(found)


def test_no_two_modules_share_a_name():
    """A name says where a module lives: no two modules (or a module and a package) with one name.
    commands/ is exempt: its modules are named after the verbs they implement."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SOURCE.rglob("*.py")):
        if path.parent.name == "commands" or path.stem in ("__init__", "__main__"):
            continue
        seen[path.stem].append(str(path.relative_to(SOURCE.parent)))
    for folder in sorted(p for p in SOURCE.rglob("*") if (p / "__init__.py").is_file() and p != SOURCE):
        seen[folder.name].append(str(folder.relative_to(SOURCE.parent)) + "/")
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
