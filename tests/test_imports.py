"""Every module of the package imports on its own (a name moved without its callers fails here first)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import fbn_prune

MODULES = [m.name for m in pkgutil.walk_packages(fbn_prune.__path__, "fbn_prune.")
           if ".templates" not in m.name and not m.name.endswith("__main__")]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
