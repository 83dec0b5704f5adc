"""Editing a contract file's JSON tree in tests: a copy with one field changed or deleted."""

from __future__ import annotations

import copy
from typing import Any

#: The value that deletes the field instead of setting it.
DELETE = object()


def edited(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of ``tree`` with the field at ``path`` set to ``value`` (or deleted)."""
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree
