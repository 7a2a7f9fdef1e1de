"""The shape of the code: who may import whom, no cycles, Flower's internals behind one door."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = {"fedsilo": ROOT / "src" / "fedsilo", "server": ROOT / "server",
            "clients": ROOT / "clients", "strategies": ROOT / "strategies"}
# Flower's public API: these modules, and only the names each one exports
PUBLIC_FLOWER = ("flwr", "flwr.app", "flwr.serverapp", "flwr.serverapp.strategy", "flwr.clientapp",
                 "flwr.client.mod", "flwr.common")


def _modules() -> dict[str, Path]:
    out = {}
    for top, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, names, _ in _imports(path):
            if target.split(".")[0] not in PACKAGES:
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            graph[mod].update(subs or ([target] if target in modules else []))
            if subs and len(subs) < len(names) and target in modules:
                graph[mod].add(target)  # names from the package itself too
    return graph


def test_dependency_direction():
    """server -> strategies -> fedsilo; clients -> fedsilo; nothing imports the apps."""
    allowed = {"fedsilo": {"fedsilo"}, "strategies": {"strategies", "fedsilo"},
               "server": {"server", "strategies", "fedsilo"}, "clients": {"clients", "fedsilo"}}
    bad = [f"{mod} imports {dep}" for mod, deps in _graph().items() for dep in deps
           if dep.split(".")[0] not in allowed[mod.split(".")[0]]]
    assert bad == []


def test_no_import_cycles():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == []


def test_flower_internals_only_through_flower_compat():
    """Only fedsilo/flower_compat.py reaches past Flower's public API."""
    bad = []
    files = [p for root in PACKAGES.values() for p in root.rglob("*.py")]
    files += list((ROOT / "tests").rglob("*.py")) + list((ROOT / "benchmarks").rglob("*.py"))
    for path in files:
        if path.name == "flower_compat.py":
            continue
        for target, names, line in _imports(path):
            if target.split(".")[0] != "flwr":
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if target not in PUBLIC_FLOWER:
                bad.append(f"{where} imports {target}")
                continue
            public = getattr(importlib.import_module(target), "__all__", None)
            bad += [f"{where} imports {target}.{n} (not in its __all__)" for n in names
                    if n.startswith("_") or (public is not None and n not in public)]
    assert bad == []


def test_flower_compat_still_finds_every_internal():
    """A Flower upgrade that moves an internal fails here, not in a run."""
    from fedsilo import flower_compat

    for name in flower_compat.__all__:
        assert getattr(flower_compat, name) is not None, name
    assert all(x is not None for x in flower_compat.lazy_internals())


@pytest.mark.parametrize("ours,theirs", [
    ("NORM_BIT", "KEY_NORM_BIT"), ("CLIPPING_NORM", "KEY_CLIPPING_NORM"),
    ("SECAGG_RECORD", "RECORD_KEY_CONFIGS")])
def test_protocol_names_are_flowers(ours, theirs):
    from fedsilo import flower_compat, protocol

    assert getattr(protocol, ours) == getattr(flower_compat, theirs)


def test_secure_aggregation_stage_keys_are_flowers():
    from fedsilo.flower_compat import Key
    from fedsilo.privacy.boundary import SECAGG_STAGE_KEYS

    expected = ({Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2}, {Key.DESTINATION_LIST,
                Key.CIPHERTEXT_LIST}, {Key.MASKED_PARAMETERS}, {Key.NODE_ID_LIST,
                Key.SHARE_LIST})
    assert list(SECAGG_STAGE_KEYS) == list(expected)


# The floors of src/fedsilo, from the ground up (docs/architecture.md draws the same list):
# a module imports only modules on its own floor or below.
FLOORS = [
    {"config", "protocol", "arrays", "console", "interrupt", "flower_compat", "files",
     "ports", "metrics", "facts", "faults"},
    {"data", "results"},
    {"models"},
    {"training"},
    {"privacy"},
    {"node"},
    {"baselines", "cluster"},
    {"attacks", "runner"},
    {"sweep", "deploy"},
    {"report", "cli"},
]


def _floor(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    for i, names in enumerate(FLOORS):
        if part in names:
            return i
    raise AssertionError(f"{module}: on no floor of FLOORS (add it there and to "
                         f"docs/architecture.md)")


def test_no_import_runs_up_a_floor():
    """Inside src/fedsilo, every import runs down (or along) the floors."""
    bad = []
    for mod, deps in _graph().items():
        if not mod.startswith("fedsilo.") :
            continue
        for dep in deps:
            if dep.startswith("fedsilo.") and dep != "fedsilo" and _floor(dep) > _floor(mod):
                bad.append(f"{mod} (floor {_floor(mod)}) imports {dep} (floor {_floor(dep)})")
    assert bad == []


def test_the_floors_are_written_down_in_the_architecture_page():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for i, names in enumerate(FLOORS, start=1):
        line = next((ln for ln in page.splitlines() if ln.startswith(f"{i:>2}. ")), "")
        assert set(line.split(": ", 1)[-1].replace(",", " ").split()) >= names, (i, line)


# Flower's strategies keep their server-side state in attributes with no API around them:
# only fedsilo.flower_compat may name them (a checkpoint reads and writes them there).
FLOWER_STATE = {"m_t", "v_t", "momentum_vector", "current_arrays", "clipped_count_stddev"}


def test_flower_strategy_state_is_read_only_through_flower_compat():
    bad = []
    for root in PACKAGES.values():
        for path in root.rglob("*.py"):
            if path.name == "flower_compat.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                name = node.attr if isinstance(node, ast.Attribute) else (
                    node.value if isinstance(node, ast.Constant) else None)
                if name in FLOWER_STATE:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} names {name!r}")
    assert bad == []
