"""Finds the feature views defined in this package.

Every module of the ``features`` package (other than the API itself) is
imported, and each module-level ``FeatureView`` value is one view. Names come
from the views themselves, never from file names.
"""

from __future__ import annotations

import importlib
import pkgutil

import features
from features.definition import FeatureView
from parity.errors import DefinitionError

_NOT_VIEWS = {"definition", "registry"}


def load_views() -> dict[str, FeatureView]:
    """All views by name.

    Raises:
        DefinitionError: two modules define views with the same name.
    """
    views: dict[str, FeatureView] = {}
    for info in pkgutil.iter_modules(features.__path__):
        if info.name in _NOT_VIEWS or info.name.startswith("_"):
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
