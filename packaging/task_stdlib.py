"""The standard library a frozen PoolNet bundle carries for task scripts.

PyInstaller bundles only the modules the app itself imports, but tasks are arbitrary ``.py``
scripts run by the bundle's own interpreter (``poolnet_desktop.frozen``): a task importing
``statistics`` or ``csv`` must find it. So the bundle takes every public standard-library
module, less the GUI toolkit and developer tools no headless task needs.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterator

LEFT_OUT = frozenset(
    {
        "tkinter", "turtle", "turtledemo", "idlelib",  # Tk GUI: not in the bundle at all
        "test", "lib2to3", "ensurepip", "venv", "pydoc_data", "distutils",  # developer tools
        "antigravity", "this",  # jokes that open a browser or print a poem
    }
)


def task_stdlib() -> list[str]:
    """Dotted names of the standard-library modules to bundle as hidden imports, sorted."""
    names: list[str] = []
    for name in sorted(sys.stdlib_module_names - LEFT_OUT):
        spec = None if name.startswith("_") else importlib.util.find_spec(name)
        if spec is None:  # private (pulled in by the public ones) or another platform's module
            continue
        names.append(name)
        if spec.submodule_search_locations:
            names.extend(_submodules(name, list(spec.submodule_search_locations)))
    return names


def _submodules(package: str, paths: list[str]) -> Iterator[str]:
    """Every submodule under ``paths`` without importing any (``pkgutil.walk_packages`` does)."""
    for info in pkgutil.iter_modules(paths, package + "."):
        leaf = info.name.rsplit(".", 1)[1]
        if leaf in ("test", "tests", "idle_test"):
            continue
        yield info.name
        if info.ispkg:
            yield from _submodules(info.name, [os.path.join(path, leaf) for path in paths])
