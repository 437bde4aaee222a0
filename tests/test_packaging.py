"""Every Python package of the source tree is in the wheel.

pyproject.toml lists the packages by hand (the source folders engine/, tui/ and themes/ are
mapped onto batchtui.*): a package left out works in an editable install and is missing from a
real one, so a user's `pip install batchtui` would fail on the first import of it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_tree_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for prefix, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([prefix, *rel.parts]))
    assert found, "no package found: the package-dir mapping is wrong"
    assert found == listed, (
        f"missing from pyproject: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
    )
