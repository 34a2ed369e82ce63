"""Finds the feature views defined in this package.

Every module of the ``features`` package (other than the API itself) is
imported, and each module-level ``FeatureView`` value is one view. Names come
from the views themselves, never from file names.

Candidates: a module named ``<view>_v<N>`` (``features/user_stats_v3.py``)
holds the next version of a live view, to be compared with it before it
replaces it (``parity shadow``). It defines a ``FeatureView`` with the live
view's name and ``version=N``, often ``dataclasses.replace`` of the live one.
``load_views`` never imports such modules, so a candidate beside the live view
changes nothing that reads views by name (jobs, serving, replay, reset); only
``get_candidate`` loads it. Module names ending in ``_v<digits>`` are
therefore reserved for candidates.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import features
from features.definition import FeatureView
from parity.errors import DefinitionError

_NOT_VIEWS = {"definition", "registry"}
_CANDIDATE = re.compile(r"_v[0-9]+$")


def load_views() -> dict[str, FeatureView]:
    """All views by name.

    Raises:
        DefinitionError: two modules define views with the same name.
    """
    views: dict[str, FeatureView] = {}
    for info in pkgutil.iter_modules(features.__path__):
        if info.name in _NOT_VIEWS or info.name.startswith("_") or _CANDIDATE.search(info.name):
            continue
        module = importlib.import_module(f"features.{info.name}")
        for value in vars(module).values():
            if isinstance(value, FeatureView):
                if value.name in views and views[value.name] is not value:
                    raise DefinitionError(
                        f"two feature views are named {value.name!r} (one in features/{info.name}.py); "
                        "rename one of them."
                    )
                views[value.name] = value
    return views


def get_view(name: str) -> FeatureView:
    """One view by name.

    Raises:
        DefinitionError: no view has that name; the message lists the known ones.
    """
    views = load_views()
    if name not in views:
        raise DefinitionError(f"unknown feature view {name!r}; defined views: {sorted(views)}.")
    return views[name]


def get_candidate(name: str, version: int) -> FeatureView:
    """Version ``version`` of view ``name``, from its candidate module ``features/<name>_v<version>.py``.

    Raises:
        DefinitionError: the module is absent, or does not define exactly one view
            named ``name`` with that version.
    """
    stem = f"{name}_v{version}"
    path = f"features/{stem}.py"
    try:
        module = importlib.import_module(f"features.{stem}")
    except ModuleNotFoundError as exc:
        if exc.name != f"features.{stem}":
            raise  # the candidate exists but imports something missing: that error says what
        raise DefinitionError(
            f"no candidate version {version} of {name!r}: add {path} defining a FeatureView "
            f"named {name!r} with version={version}."
        ) from exc
    # The module may import the live view to derive the candidate from it (dataclasses.replace).
    named = {id(v): v for v in vars(module).values() if isinstance(v, FeatureView) and v.name == name}
    found = [v for v in named.values() if v.version == version]
    if len(found) != 1:
        versions = sorted(v.version for v in named.values())
        raise DefinitionError(
            f"{path} must define one FeatureView named {name!r} with version={version}; "
            f"it defines {len(found)} (versions of {name!r} found there: {versions})."
        )
    return found[0]
