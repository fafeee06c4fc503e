"""Which classes each process holds when the class centres are sharded over the processes (Partial FC)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world_size` holds classes [start, stop) of `num_classes`."""
    num_classes: int
    world_size: int
    rank: int

    @property
    def start(self) -> int:
        base, extra = divmod(self.num_classes, self.world_size)
        return base * self.rank + min(self.rank, extra)

    @property
    def stop(self) -> int:
        base, extra = divmod(self.num_classes, self.world_size)
        return self.start + base + int(self.rank < extra)

    @property
    def size(self) -> int:
        return self.stop - self.start


def all_shards(num_classes: int, world_size: int) -> list[Shard]:
    return [Shard(num_classes, world_size, r) for r in range(world_size)]
