"""No two modules of recfound/ or flows/ import each other, however indirectly.

A circle of imports makes a module's meaning depend on which end is imported first, and hides a
missing layer (the piece both ends need belongs below them). Counted: every import that runs
when a module loads, those under `if TYPE_CHECKING:` included (recfound.imports); and, for the
whole design, imports deferred into functions too: deferring an import hides a circle from
Python, not from the reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recfound.imports import import_cycles

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recfound", "flows")


def _report(cycles: list[list[str]]) -> str:
    return "import circles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("module_level", [True, False], ids=["module-level", "with-deferred"])
def test_no_module_imports_itself_through_others(module_level: bool):
    cycles = import_cycles(ROOT, PACKAGES, module_level=module_level)
    assert not cycles, _report(cycles)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_a_circle_is_named_module_by_module(tmp_path: Path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import c\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "from pkg.a import x\n",  # imports into the circle, not part of it
        },
    )
    assert import_cycles(root, ["pkg"]) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert _report(import_cycles(root, ["pkg"])).endswith("pkg.a -> pkg.b -> pkg.c -> pkg.a")


def test_an_import_inside_a_function_counts_only_with_deferred_imports(tmp_path: Path):
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "def late():\n    from pkg import a\n",
            "pkg/sub/__init__.py": "from pkg.sub.leaf import x\n",  # a package and its module:
            "pkg/sub/leaf.py": "from pkg.sub import helper\nx = 1\n",  # no circle via parents
            "pkg/sub/helper.py": "",
        },
    )
    assert import_cycles(root, ["pkg"]) == []
    assert import_cycles(root, ["pkg"], module_level=False) == [["pkg.a", "pkg.b", "pkg.a"]]
