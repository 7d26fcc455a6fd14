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
    """The first cell of each row of the Layout section's `appliance/` table."""
    table = _layout()[_layout().index("| `appliance/` | owns |"):]
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.M)) - {"appliance/"}


def _modules() -> list[Path]:
    return sorted(p for p in (ROOT / "appliance").rglob("*.py") if p.name != "__main__.py")


def test_the_readme_map_has_one_row_for_each_module_of_the_appliance():
    modules = {str(p.relative_to(ROOT / "appliance")) for p in _modules()} - {"__init__.py"}
    names = _names_in_map()
    assert not modules - names, f"modules the README's map does not name: {modules - names}"
    assert not names - modules, f"the README's map names modules that are gone: {names - modules}"


def test_every_path_the_readme_names_is_there():
    """A file or directory of the project named in backticks anywhere in README.md."""
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`((?:appliance|hw|image|buildroot|tests)/[\w./-]*)`", readme))
    gone = sorted(p for p in named if "*" not in p and not (ROOT / p).exists())
    assert not gone, f"README.md names paths that are not in the tree: {gone}"


def test_no_module_of_the_appliance_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


# What each part may not import: data flows one way, receiving -> store -> studies and
# routing -> delivery, and nothing below calls back up (the composition root wires them).
ABOVE_ALL = {"app", "commands", "status"}  # the composition root and what it alone uses
MAY_NOT_IMPORT = {
    "store": {"receiving", "studies", "routing", "delivery", "commitment_scp", "mpps",
              "worklist", *ABOVE_ALL},
    "validation": {"store", "receiving", "studies", "routing", "delivery", *ABOVE_ALL},
    "routing": {"receiving", "studies", "delivery", *ABOVE_ALL},
    "studies": {"receiving", "delivery", "commitment_scp", *ABOVE_ALL},
    "delivery": {"receiving", "studies", "routing", "commitment_scp", "worklist", *ABOVE_ALL},
    # the receiving side: the listener and the services it answers for modalities
    "receiving": {"studies", "routing", "delivery", *ABOVE_ALL},
    "commitment_scp": {"receiving", "studies", "routing", "delivery", *ABOVE_ALL},
    "mpps": {"receiving", "studies", "routing", "delivery", *ABOVE_ALL},
    "worklist": {"receiving", "studies", "routing", "delivery", *ABOVE_ALL},
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


def test_every_test_the_readme_names_is_there():
    """The Guarantees name the tests that prove each promise: each must exist."""
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)(?:\.py)?`", readme))
    files = sorted((ROOT / "tests").rglob("*.py"))
    stems = {p.stem for p in files}
    source = "".join(p.read_text() for p in files)
    gone = sorted(n for n in named if n not in stems and f"def {n}(" not in source)
    assert not gone, f"README.md names tests that do not exist: {gone}"
