"""A griffe extension for the API reference: docstrings here are written with reST roles
(``:class:`Session```, ``:meth:`~Session.process_llm```), which Markdown does not know.

After a package is loaded, every role becomes a mkdocs-autorefs link
(``[`Session`][perso_sync.session.Session]``), the name resolved from the docstring's own scope
as Sphinx would. An autoref that points nowhere is a warning, so ``mkdocs build --strict`` fails
on a broken cross-reference. Names under a private module or class
(``perso_sync._sse.StreamFailed``) are not in the reference: they become plain code. reST's
``text::`` (a literal block follows) becomes ``text:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(?P<body>[^`]+)`")
EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^>]+)>$")
LITERAL_BLOCK_MARK = re.compile(r"(?<=\S)::$", re.MULTILINE)


def _resolve(scope: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names when written in ``scope``'s docstring, or None."""
    head, _, rest = target.partition(".")
    try:
        base = scope.resolve(head)
    except griffe.NameResolutionError:
        if head in scope.modules_collection:
            base = head
        else:
            inherited = _inherited_member(scope, head)
            if inherited is None:
                return None
            base = inherited
    return f"{base}.{rest}" if rest else base


def _inherited_member(scope: griffe.Object, name: str) -> str | None:
    """``name`` as a member a class (the scope, or the class of a method) inherits, as Sphinx
    resolves it: ``Session`` documents the methods of its private base class as its own."""
    owner = scope if scope.is_class else scope.parent
    if not isinstance(owner, griffe.Class):
        return None
    try:
        members = owner.all_members
    except griffe.AliasResolutionError:
        return None
    return f"{owner.path}.{name}" if name in members else None


def _is_private(path: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in path.split("."))


def _link(scope: griffe.Object, body: str) -> str:
    explicit = EXPLICIT_TITLE.match(body)
    target = explicit["target"] if explicit else body
    short = target.startswith("~")
    target = target.lstrip("~").removesuffix("()")
    if explicit:
        title = explicit["title"]
    elif short:
        title = target.rsplit(".", 1)[-1]
    else:
        title = target
    path = _resolve(scope, target)
    if path is None:
        # Left for autorefs to report (strict mode fails): the docstring names nothing we know.
        return f"[`{title}`][{target}]"
    if _is_private(path):
        return f"`{title}`"
    return f"[`{title}`][{path}]"


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        text = ROLE.sub(lambda match: _link(obj, match["body"]), obj.docstring.value)
        obj.docstring.value = LITERAL_BLOCK_MARK.sub(":", text)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite(member)  # type: ignore[arg-type]


class RstRoles(griffe.Extension):
    """Turn reST cross-reference roles into autorefs links once a package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _rewrite(pkg)
