"""The house: daemon/ is built in floors, and a module imports only from its own floor or below (the folder tree
is a picture of the data flow). Ground types, hand-offs, the outbox and the synthetic line at the bottom;
settings, sources, detect, events, publish and the PLC outputs above them; ops, the camera pipeline and the
tools above those; the composition root (app, cli, demo) on top. A new module must be given a floor here."""

from __future__ import annotations

import ast
from pathlib import Path

DAEMON = Path(__file__).resolve().parents[1] / "daemon"
FLOORS: dict[str, int] = {
    **dict.fromkeys(("__init__", "frames", "handoff", "buffers", "lifecycle", "exitcodes", "logs", "redact", "files",
                     "metrics", "cpus", "backoff", "topics", "payloads", "outbox", "synthetic"), 0),
    **dict.fromkeys(("settings", "sources", "detect", "events", "publish", "plc"), 1),
    **dict.fromkeys(("ops", "pipeline", "tools"), 2),
    **dict.fromkeys(("app", "cli", "demo", "__main__"), 3),
}


def _room(module: str) -> str:
    """daemon.events.stage -> events; daemon.app -> app; daemon -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "daemon":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "daemon")
    return found


def test_every_module_has_a_floor_and_no_import_climbs() -> None:
    climbs, homeless = [], []
    for path in sorted(DAEMON.rglob("*.py")):
        relative = path.relative_to(DAEMON.parent).with_suffix("")
        room = _room(".".join(relative.parts))
        if room not in FLOORS:
            homeless.append(str(relative))
            continue
        for target in _imports(path):
            there = _room(target)
            if there in FLOORS and FLOORS[there] > FLOORS[room]:
                climbs.append(f"{relative} (floor {FLOORS[room]}) imports {target} (floor {FLOORS[there]})")
    assert homeless == [], f"give these a floor in FLOORS: {homeless}"
    assert climbs == [], climbs


def test_rooms_of_one_floor_import_each_other_one_way_only() -> None:
    """Within a floor, imports may go sideways but never round in a loop (publish/ -> settings_mqtt ->
    settings_cameras -> publish/topics was one, when settings were modules of their own): the rooms' import
    graph has no cycle."""
    graph: dict[str, set[str]] = {}
    for path in sorted(DAEMON.rglob("*.py")):
        room = _room(".".join(path.relative_to(DAEMON.parent).with_suffix("").parts))
        graph.setdefault(room, set()).update(_room(t) for t in _imports(path) if _room(t) != room)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    loops: list[list[str]] = []

    def visit(room: str, path: list[str]) -> None:
        state[room] = 1
        for there in sorted(graph.get(room, ())):
            if state.get(there) == 1:
                loops.append([*path[path.index(there):], there])
            elif there not in state:
                visit(there, [*path, there])
        state[room] = 2

    for room in sorted(graph):
        if room not in state:
            visit(room, [room])
    assert loops == [], loops
