"""The registry of adaptation methods: names, option sections, the data each needs and the words that describe
it. Torch-free on purpose: parsing and validating a recipe reads this registry, and must not pay for torch.

A method registers two things from its package's `__init__.py` (see `adapt/methods/dann/` for a full example):

- `register_options(Options, section="dann")`: a frozen dataclass of its recipe keys (`method.dann.*`; with
  `section=None` its fields sit directly under `method.`), declared with `adapt.core.fields.option` and checked
  by the dataclass's own `problems()`;
- `register_method("dann", impl="adapt.methods.dann.method:Dann", ...)`: the class that trains it (imported
  only when a run starts), the option sections it reads, the data it requires, a sentence for model cards and
  reports, and optionally how its facts in `report.json`'s `method_summary` read in the report and recipe checks
  that hold only when it is the chosen method (`checks`, e.g. `distill`'s required teachers).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Options:
    """A set of method options: a section `method.<section>.*`, or flat keys `method.*` (section None)."""

    cls: type
    section: str | None
    help: str

    def keys(self) -> list[str]:
        """The keys under `method.` that these options own."""
        if self.section is not None:
            return [self.section]
        return [f.metadata.get("key") or f.name for f in dataclasses.fields(self.cls)]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    impl: str  # "module:Class" of the training side, imported when a run starts
    description: str  # one sentence, for model cards and reports ("what this method did")
    options: tuple[str, ...] = ()  # the keys under `method.` it reads (sections or flat keys)
    requires: tuple[str, ...] = ()  # recipe data keys it cannot run without, e.g. "data.target.unlabeled"
    # Markdown lines for the report from `report.json`'s method_summary (beyond the per-phase losses, which every
    # method's report shows); None when the method records nothing of its own.
    report_lines: Callable[[dict], list[str]] | None = None
    # Recipe-wide checks that hold only when this method is chosen (every option set's own `problems()` runs for
    # every recipe, with the defaults of methods not chosen): e.g. a key it needs, or data needed for one setting.
    checks: Callable[[Any], list[str]] | None = None


_METHODS: dict[str, MethodSpec] = {}
_OPTIONS: dict[str, Options] = {}  # by the first key they own


def register_options(cls: type, *, section: str | None, help: str = "") -> type:
    """Add a method's option dataclass to the recipe schema; a key registered twice is a programming error."""
    opts = Options(cls, section, help)
    taken = {k for o in _OPTIONS.values() for k in o.keys()}
    clash = [k for k in opts.keys() if k in taken or k == "name"]
    if clash:
        raise ValueError(f"method option key(s) {clash} are already registered")
    _OPTIONS[opts.keys()[0]] = opts
    return cls


def register_method(name: str, *, impl: str, description: str, options: tuple[str, ...] = (),
                    requires: tuple[str, ...] = (), report_lines: Callable[[dict], list[str]] | None = None,
                    checks: Callable[[Any], list[str]] | None = None) -> MethodSpec:
    """Add a method by name; a duplicate name is a programming error, as in peft's `register_peft_method`."""
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered (by {_METHODS[name].impl})")
    spec = MethodSpec(name, impl, description, tuple(options), tuple(requires), report_lines, checks)
    _METHODS[name] = spec
    return spec


def available_methods() -> list[str]:
    return sorted(_METHODS)


def method_spec(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _METHODS[name]


def describe(name: str) -> str:
    """The method's sentence for model cards and reports (a run of a method this version no longer has still
    gets a card)."""
    return _METHODS[name].description if name in _METHODS else "see the adapt documentation"


def registered_options() -> list[Options]:
    """Every option set, in registration order (the order of the schema and of docs/recipe.md)."""
    return list(_OPTIONS.values())


def method_class(name: str) -> Any:
    """The class that trains method `name`: imports its training side (torch and all)."""
    module, _, attr = method_spec(name).impl.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_method(name: str) -> Any:
    return method_class(name)()
