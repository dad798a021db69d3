"""Adaptation methods: how the domains are used. Each method is one folder here that owns everything about it:

    adapt/methods/<name>/__init__.py   its recipe options, registration, description and report lines (no torch)
    adapt/methods/<name>/method.py     its training side: phases, losses, and any heads it trains beside the model

Folders are found on import, so adding a method is adding its folder (plus a recipe, a test and a docs row);
nothing else in adapt names it. The training loop (`adapt.training.loop`) stays generic: a method returns
`Phase`s (`adapt.methods.base`) and the loop runs them.
"""

from __future__ import annotations

import importlib
import pkgutil

from adapt.methods.registry import (  # noqa: F401
    MethodSpec,
    available_methods,
    describe,
    get_method,
    method_class,
    method_spec,
    register_method,
    register_options,
    registered_options,
)


def _discover() -> None:
    # Every sub-package is a method family; importing its __init__ registers it (and imports no torch).
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
