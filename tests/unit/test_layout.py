"""The README's module map matches the tree, and no module of the appliance grows past
500 lines (issue 9: a house a newcomer can live in)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500


def _layout() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Layout"):]


def _names_in_map() -> set[str]:
    """Every `name` in backticks of the Layout section's table rows, and the modules a
    package row lists (`store/queue.py`, or `worklist/` with `sync`, `cache` ...)."""
    names = set()
    for row in _layout().splitlines():
        if row.startswith("| `"):
            names |= set(re.findall(r"`([^`]+)`", row))
    return names


def _modules() -> list[Path]:
    return sorted(p for p in (ROOT / "appliance").rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py"))


def test_every_module_of_the_appliance_is_in_the_readme_map():
    names = _names_in_map()
    missing = []
    for path in _modules():
        relative = path.relative_to(ROOT / "appliance")
        if len(relative.parts) == 1:
            found = path.name in names
        else:  # a package's module: named as pkg/mod.py, or by its stem in the pkg/ row
            found = str(relative) in names or (f"{relative.parts[0]}/" in names
                                               and path.stem in names)
        if not found:
            missing.append(str(relative))
    assert not missing, f"modules the README's Layout section does not name: {missing}"


def test_the_map_names_no_module_that_is_gone():
    names = {n for n in _names_in_map() if n.endswith(".py")}
    gone = [n for n in names if not (ROOT / "appliance" / n).exists()
            and not list((ROOT / "appliance").rglob(n))]
    assert not gone, f"the README's Layout section names modules that are gone: {gone}"


def test_no_module_of_the_appliance_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


# What each part may not import: data flows one way, receiving -> store -> studies and
# routing -> delivery, and nothing below calls back up (the composition root wires them).
MAY_NOT_IMPORT = {
    "store": {"receiving", "studies", "routing", "delivery", "app", "commands", "status"},
    "validation": {"store", "receiving", "studies", "routing", "delivery", "app"},
    "routing": {"receiving", "studies", "delivery", "app", "commands", "status"},
    "studies": {"receiving", "delivery", "app", "commands", "status"},
    "delivery": {"receiving", "studies", "routing", "app", "commands", "status"},
    "receiving": {"studies", "routing", "delivery", "app", "commands", "status"},
}


def _imported_parts(part: str) -> set[str]:
    """The appliance parts (top-level module or package names) that `part` imports."""
    base = ROOT / "appliance" / part
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "appliance":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("appliance."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names
                          if a.name.startswith("appliance.")}
    return found - {part}


def test_data_flows_one_way_and_nothing_below_calls_back_up():
    wrong = {part: sorted(_imported_parts(part) & banned)
             for part, banned in MAY_NOT_IMPORT.items()}
    assert not {p: w for p, w in wrong.items() if w}, wrong
