"""The import tree is the checkout as it stands: tools resolve ``taskstream.*`` from it.

``services/core/taskstream`` is the package; each other folder of ``services/`` (and
``schemas/``) is symlinked into it as the subpackage it is. So the editable install is a plain
path entry, not setuptools' import hook, and mypy, an editor or any static tool that reads the
tree finds every module where its import name says.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import taskstream
from tests.conftest import REPO

ROOT = REPO / "services" / "core"  # the one import root (mypy_path, the .pth entry)
PACKAGE = ROOT / "taskstream"
# subpackage -> the top-level folder it is
LINKED = {
    "consumer": REPO / "services" / "consumer",
    "producer": REPO / "services" / "producer",
    "cli": REPO / "services" / "cli",
    "console": REPO / "services" / "console",
    "testing": REPO / "services" / "testing",
    "schemas": REPO / "schemas",
}


def test_every_service_folder_is_linked_into_the_package_as_its_subpackage() -> None:
    folders = {p.name for p in (REPO / "services").iterdir() if p.is_dir() and p.name != "core"}
    assert folders == set(LINKED) - {"schemas"}, "a new service folder needs its link"
    for name, folder in LINKED.items():
        link = PACKAGE / name
        assert link.is_symlink(), link
        assert not os.path.isabs(os.readlink(link)), "relative, so any clone resolves it"
        assert link.resolve() == folder.resolve()


def test_the_installed_package_is_the_checkout_through_a_plain_path_entry() -> None:
    assert list(taskstream.__path__) == [str(PACKAGE)]
    assert str(ROOT) in sys.path, "the editable install adds services/core to sys.path"
    assert not [f for f in sys.meta_path if "editable" in type(f).__module__.lower()]


def test_each_module_resolves_where_its_import_name_says() -> None:
    for path in sorted(PACKAGE.rglob("*.py")) + [
        p for name in LINKED for p in sorted((PACKAGE / name).glob("**/*.py"))
    ]:
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        assert Path(spec.origin) == path, name
