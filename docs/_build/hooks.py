"""MkDocs hooks of the API reference: what ``mkdocs build --strict`` must refuse.

1. A public name without a docstring. The public names are the exports (``__all__``) of
   ``perso_sync``, ``perso_sync.errors``, ``mock_server`` and the public functions and constants of
   ``mock_server.pytest_plugin``; for each class among them, its public methods and properties
   (those it defines itself). Data fields are documented by their class's docstring.
2. A public name that no reference page renders (``::: name`` in ``docs/reference/``).

Each finding is logged as a warning, which ``--strict`` turns into a failed build.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.hooks.docstrings")

PACKAGES = ("perso_sync", "mock_server")
EXPORTING_MODULES = ("perso_sync", "perso_sync.errors", "mock_server")
ALL_PUBLIC_MODULES = ("mock_server.pytest_plugin",)  # no __all__: every public name counts
NOT_DOCUMENTED_NAMES = {"__version__"}  # a string; the changelog documents it
DIRECTIVE = re.compile(r"^:::\s*(?P<identifier>[\w.]+)[ \t]*$", re.MULTILINE)
NO_MEMBERS = re.compile(r"^\s*members:\s*(?:false|\[\])\s*$", re.MULTILINE)


def _public_names(module: griffe.Module) -> list[str]:
    if module.path in EXPORTING_MODULES:
        exports = module.exports
        if exports is None:
            raise RuntimeError(f"{module.path} has no __all__")
        return [str(name) for name in exports if name not in NOT_DOCUMENTED_NAMES]
    return [
        name
        for name, member in module.members.items()
        if not name.startswith("_") and not member.is_alias
    ]


def _has_docstring(obj: griffe.Object | griffe.Alias) -> bool:
    return obj.docstring is not None and bool(obj.docstring.value.strip())


def _class_members(cls: griffe.Class) -> Iterator[griffe.Object]:
    for name, member in cls.members.items():
        if name.startswith("_") or member.is_alias:
            continue
        if member.is_function or (member.is_attribute and "property" in member.labels):
            yield member  # type: ignore[misc]


def public_objects(collection: griffe.ModulesCollection) -> Iterator[tuple[str, griffe.Object]]:
    """(public path, object) for every name the checks cover, aliases resolved."""
    for module_path in (*EXPORTING_MODULES, *ALL_PUBLIC_MODULES):
        module = collection.get_member(module_path)
        yield module_path, module
        for name in _public_names(module):
            target = module[name]
            if target.is_alias:
                target = target.final_target
            public_path = f"{module_path}.{name}"
            yield public_path, target
            if target.is_class:
                for member in _class_members(target):
                    yield f"{public_path}.{member.name}", member


def missing_docstrings(collection: griffe.ModulesCollection) -> list[str]:
    """Public paths whose object has no docstring (each object reported once)."""
    seen: set[str] = set()
    missing = []
    for public_path, obj in public_objects(collection):
        if obj.path in seen:
            continue
        seen.add(obj.path)
        if not _has_docstring(obj):
            where = f"{obj.relative_filepath}:{obj.lineno}"
            missing.append(f"{public_path} ({obj.kind.value} at {where})")
    return missing


def _rendered(reference_dir: Path) -> set[str]:
    """Identifiers the reference pages render: each ``::: identifier`` and, for a module
    rendered with its members (no ``members: false`` in its options), ``module.member``."""
    rendered: set[str] = set()
    for page in reference_dir.rglob("*.md"):
        text = page.read_text()
        for match in DIRECTIVE.finditer(text):
            identifier = match["identifier"]
            rendered.add(identifier)
            options = re.match(r"(?:\n[ \t]+.*)*", text[match.end() :])
            if not (options and NO_MEMBERS.search(options.group(0))):
                rendered.add(identifier + ".*")
    return rendered


def unrendered_names(collection: griffe.ModulesCollection, reference_dir: Path) -> list[str]:
    """Public names that no reference page renders, neither under that name nor another."""
    rendered = _rendered(reference_dir)

    def covered(public_path: str, obj: griffe.Object) -> bool:
        parent = public_path.rsplit(".", 1)[0]
        return (
            public_path in rendered
            or obj.path in rendered
            or f"{parent}.*" in rendered
            or f"{obj.parent.path}.*" in rendered  # type: ignore[union-attr]
        )

    missing = []
    for module_path in (*EXPORTING_MODULES, *ALL_PUBLIC_MODULES):
        module = collection.get_member(module_path)
        for name in _public_names(module):
            target = module[name]
            if target.is_alias:
                target = target.final_target
            public_path = f"{module_path}.{name}"
            if not covered(public_path, target):
                missing.append(public_path)
    return missing


def load(root: Path) -> griffe.ModulesCollection:
    loader = griffe.GriffeLoader(search_paths=[str(root)])
    for package in PACKAGES:
        loader.load(package)
    loader.resolve_aliases(implicit=False, external=False)
    return loader.modules_collection


def on_pre_build(config: Any, **kwargs: Any) -> None:
    root = Path(config["config_file_path"]).parent
    collection = load(root)
    for name in missing_docstrings(collection):
        log.warning("public name without a docstring: %s", name)
    for name in unrendered_names(collection, Path(config["docs_dir"]) / "reference"):
        log.warning("public name on no reference page (add `::: %s`): %s", name, name)
