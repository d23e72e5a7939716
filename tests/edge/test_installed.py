"""The device package as installed: every module of the checkout's edge/ is in it, each
imports, and the schema ships with it. In the device subset (scripts/test-device) the
package comes from the installed wheel, never from the checkout, so a module or data file
the wheel lacks fails here."""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import edgewise.edge
from tests.conftest import ROOT

CHECKOUT = ROOT / "edge" / "src" / "edgewise" / "edge"
INSTALLED = Path(edgewise.edge.__file__).parent
ROOMS = {"core", "link", "runtime", "fleet", "observe", "remote"}


def _modules(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.py")}


def test_the_installed_package_holds_every_module_of_the_checkout() -> None:
    if os.environ.get("EDGEWISE_TEST_BUNDLES"):  # the device subset: the wheel, not us
        assert not INSTALLED.is_relative_to(ROOT / "edge"), INSTALLED
    assert _modules(INSTALLED) == _modules(CHECKOUT)
    assert (INSTALLED / "runtime" / "schemas" / "manifest-v1.schema.json").is_file()
    assert (INSTALLED / "py.typed").is_file()


def test_every_device_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(edgewise.edge.__path__, "edgewise.edge.")]
    assert {n.split(".")[2] for n in names} >= ROOMS
    for name in names:
        importlib.import_module(name)
    assert len(names) >= 60
