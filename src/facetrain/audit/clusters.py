"""Groups of identities that are probably one person: connected components of the collision pairs (union-find)."""
from __future__ import annotations

from typing import Iterable


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def collision_clusters(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (sorted members, at least two) of the graph whose edges are `pairs`,
    largest first, then by smallest member."""
    uf = UnionFind()
    for a, b in pairs:
        uf.union(int(a), int(b))
    groups: dict[int, list[int]] = {}
    for x in uf.parent:
        groups.setdefault(uf.find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
