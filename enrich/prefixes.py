"""Longest-prefix lookup of room names, as a character trie.

Lookup cost depends on the room name's length, not on how many customers are registered. Prefixes are
matched character by character and never split on `-` (UUID room names contain hyphens).
"""

from __future__ import annotations


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.value: str | None = None


class PrefixIndex:
    """Maps registered prefixes to an owner id and finds the longest registered prefix of a name."""

    def __init__(self) -> None:
        self._root = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, prefix: str, owner: str) -> None:
        """Register `prefix` for `owner` (replacing any earlier owner of the same prefix)."""
        node = self._root
        for ch in prefix:
            node = node.children.setdefault(ch, _Node())
        if node.value is None:
            self._size += 1
        node.value = owner

    def remove(self, prefix: str) -> None:
        """Forget `prefix`; unknown prefixes are ignored. Empty branches are pruned."""
        path: list[tuple[_Node, str]] = []
        node = self._root
        for ch in prefix:
            child = node.children.get(ch)
            if child is None:
                return
            path.append((node, ch))
            node = child
        if node.value is None:
            return
        node.value = None
        self._size -= 1
        for parent, ch in reversed(path):
            child = parent.children[ch]
            if child.value is None and not child.children:
                del parent.children[ch]
            else:
                break

    def owner_of(self, prefix: str) -> str | None:
        """The owner registered for exactly `prefix`, if any."""
        node = self._root
        for ch in prefix:
            child = node.children.get(ch)
            if child is None:
                return None
            node = child
        return node.value

    def longest_match(self, name: str) -> tuple[str, str] | None:
        """(prefix, owner) of the longest registered prefix of `name`, or None."""
        node = self._root
        best: tuple[int, str] | None = None
        for i, ch in enumerate(name):
            child = node.children.get(ch)
            if child is None:
                break
            node = child
            if node.value is not None:
                best = (i + 1, node.value)
        if best is None:
            return None
        return name[: best[0]], best[1]
