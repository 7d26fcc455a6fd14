"""The README's module map matches the tree, and no module of the appliance grows past
500 lines (issue 9: a house a newcomer can live in)."""

from __future__ import annotations

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
