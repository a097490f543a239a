"""A griffe extension: Sphinx cross-reference roles in docstrings become mkdocstrings links.

The package's docstrings use Sphinx roles (``:class:`~resilience.Retry```, ``:meth:`start```,
``:func:`time.monotonic```...), which mkdocstrings would render literally. This extension
rewrites each one in the docstring's text before mkdocstrings parses it:

- to an autorefs link, ``[`Retry`][resilience.Retry]``, when the target is an object the site
  renders (it has a heading, hence an anchor, on some page);
- to plain code, ```Retry```, otherwise: private objects (``resilience._retry.Decision``),
  members without a docstring, the standard library, names it cannot resolve.

``mkdocs build --strict`` fails on a link autorefs cannot resolve, so when in doubt the
extension writes plain code: a missing link is a pity, a broken one fails the build.

Targets are resolved as Sphinx's Python domain does, innermost scope first: the object whose
docstring it is (for a class or a module), its parents up to its module (imported names
included), then the absolute path, then the package's public namespace (``resilience.X``). A
target found under a private path (``resilience._retry.Retry``) links to the public path the
site renders it under (``resilience.Retry``). Forms understood: ``:role:`target```,
``:role:`~a.b.C``` (show ``C`` only), ``:role:`!target``` (no link), ``:role:`title <target>```,
``:role:`.name```, and the ``py:`` domain prefix.

The rendered objects are found from the ``::: identifier`` blocks of the pages in ``docs_dir``
(this file's folder by default), following mkdocstrings' own rules with this site's options:
names starting with ``_`` are filtered out, members with no docstring anywhere are not shown,
inherited members are not shown, nor submodules, nor a block's root when its options say
``show_root_heading: false``.

Configured in ``mkdocs.yml``::

    plugins:
      - mkdocstrings:
          handlers:
            python:
              options:
                extensions:
                  - docs/_griffe_roles.py:SphinxRoles
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import griffe
import yaml  # type: ignore[import-untyped]  # mkdocs depends on PyYAML; no stubs installed

__all__ = ["ROLE", "SphinxRoles", "documented_blocks", "rewrite"]

_logger = logging.getLogger("mkdocs.plugins.griffe_roles")

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|data|exc|obj|const|mod|type):`(?P<content>[^`]+)`"
)
"""A Sphinx cross-reference role, with or without the ``py:`` domain."""

_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_BLOCK = re.compile(r"^:::\s+(?P<identifier>\S+)\s*$")

Resolver = Callable[[str], "str | None"]
"""Maps a role's target to the identifier of a rendered object, or None to write plain code."""


def rewrite(text: str, resolve: Resolver) -> str:
    """``text`` with every Sphinx role replaced by an autorefs link or plain code.

    Args:
        text: a docstring.
        resolve: gives the identifier to link to for a target, or None for plain code.
    """

    def replace(match: re.Match[str]) -> str:
        content = " ".join(match["content"].split())  # a role may wrap across lines
        title = None
        titled = _TITLED.match(content)
        if titled:
            title, content = titled["title"], titled["target"]
        content = "".join(content.split())  # a dotted path holds no space
        link = not content.startswith("!")
        target = content.lstrip("!")
        short = target.startswith("~")
        target = target.lstrip("~").lstrip(".")
        shown = title or (target.rsplit(".", 1)[-1] if short else target)
        identifier = resolve(target) if link and target else None
        if identifier is None:
            return f"`{shown}`"
        return f"[`{shown}`][{identifier}]"

    return ROLE.sub(replace, text)


def documented_blocks(docs_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The ``::: identifier`` blocks of every page under ``docs_dir``, with their options."""
    blocks: list[tuple[str, dict[str, Any]]] = []
    for page in sorted(docs_dir.rglob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = _BLOCK.match(line)
            if not match:
                continue
            indented = []
            for following in lines[number + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                indented.append(following)
            config = yaml.safe_load("\n".join(indented)) if indented else None
            options = config.get("options") if isinstance(config, dict) else None
            blocks.append((match["identifier"], options if isinstance(options, dict) else {}))
    return blocks


def _final(obj: griffe.Object | griffe.Alias) -> griffe.Object | None:
    """The object an alias finally points to (the object itself if not an alias)."""
    try:
        return obj.final_target if isinstance(obj, griffe.Alias) else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _shown(member: griffe.Object | griffe.Alias) -> bool:
    """Whether mkdocstrings renders ``member`` under its parent, with this site's options."""
    try:
        if member.name.startswith("_") or member.inherited or member.is_module:
            return False
        if member.is_imported and not member.is_public:
            return False
        return bool(member.has_docstrings)
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a package into links or plain code.

    Args:
        docs_dir: the folder whose pages' ``::: identifier`` blocks say what the site renders
            (default: the folder holding this file).
    """

    def __init__(self, docs_dir: str | None = None) -> None:
        super().__init__()
        self.docs_dir = Path(docs_dir) if docs_dir else Path(__file__).resolve().parent
        self.linked = 0
        self.plain = 0

    # -- what the site renders -------------------------------------------------------------------

    def rendered(self, collection: griffe.ModulesCollection, package: str) -> dict[str, str]:
        """Canonical path -> the identifier the site renders it under, for ``package``."""
        anchors: dict[str, str] = {}
        visited: set[str] = set()  # canonical paths: the first identifier wins, and aliases
        # can make cycles

        def add(identifier: str, obj: griffe.Object | griffe.Alias, root_shown: bool) -> None:
            target = _final(obj)
            if target is None or target.path in visited:
                return
            visited.add(target.path)
            if root_shown and not target.is_module:
                anchors.setdefault(target.path, identifier)
            if target.is_class or target.is_module:
                for name, member in target.members.items():
                    if _shown(member):
                        add(f"{identifier}.{name}", member, True)

        for identifier, options in documented_blocks(self.docs_dir):
            if identifier != package and not identifier.startswith(f"{package}."):
                continue
            try:
                obj = collection.get_member(identifier)
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            add(identifier, obj, options.get("show_root_heading", True) is not False)
        return anchors

    # -- resolution ------------------------------------------------------------------------------

    @staticmethod
    def _lookup(collection: griffe.ModulesCollection, path: str) -> griffe.Object | None:
        try:
            found = collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        return None if found is None else _final(found)

    def resolver(
        self,
        obj: griffe.Object,
        collection: griffe.ModulesCollection,
        package: str,
        anchors: dict[str, str],
    ) -> Resolver:
        """Resolves targets written in ``obj``'s docstring to rendered identifiers."""
        scopes: list[griffe.Object] = []
        # names are looked up in a class or a module: a function's or attribute's is its parent
        scope: griffe.Object | griffe.Alias | None = (
            obj if obj.is_class or obj.is_module else obj.parent
        )
        while isinstance(scope, griffe.Object):
            scopes.append(scope)
            scope = scope.parent

        def resolve(target: str) -> str | None:
            candidates = [f"{scope.path}.{target}" for scope in scopes]
            candidates += [target, f"{package}.{target}"]
            for path in candidates:
                found = self._lookup(collection, path)
                if found is not None:
                    return anchors.get(found.path)  # found, but rendered or not decides
            return None

        return resolve

    # -- the hook --------------------------------------------------------------------------------

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the docstrings of every object the package defines (aliases share them)."""
        collection = loader.modules_collection
        anchors = self.rendered(collection, pkg.path)
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is None or ":" not in docstring.value:
                continue
            resolve = self.resolver(obj, collection, pkg.path, anchors)

            def counted(target: str, resolve: Resolver = resolve) -> str | None:
                identifier = resolve(target)
                if identifier is None:
                    self.plain += 1
                else:
                    self.linked += 1
                return identifier

            docstring.value = rewrite(docstring.value, counted)
        _logger.debug(
            "%s: %d Sphinx roles linked, %d written as code", pkg.path, self.linked, self.plain
        )


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined under it (aliases are skipped: their targets are not)."""
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Object):
            yield from _walk(member)
