"""The stream of training batches across epochs, resumable at an exact (epoch, batch) position.

Each epoch builds a fresh loader for (seed, epoch, rank, world_size): the loader is deterministic for those, so a
resumed run re-creates the interrupted epoch and skips the batches already consumed. With several ranks, shard
splits can leave ranks with unequal batch counts; a rank that ran dry would leave the others waiting in an
all-reduce forever, so all ranks agree (one tiny all-reduce per batch on a CPU/gloo group) to end the epoch
together at the shortest rank.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch


def all_ranks_agree(group=None) -> Callable[[bool], bool]:
    """has_batch → True only if every rank has a batch (MIN all-reduce); identity when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return lambda ok: ok

    def agree(ok: bool) -> bool:
        t = torch.tensor([1 if ok else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)
        return bool(t.item())
    return agree


def batch_stream(make_loader: Callable[[int], Iterable[Any]], epoch: int = 0, skip: int = 0,
                 agree: Callable[[bool], bool] = lambda ok: ok,
                 max_empty_epochs: int = 1) -> Iterator[tuple[int, int, Any]]:
    """Yield (epoch, position, batch) forever; position = batches consumed in that epoch (1-based), so a checkpoint
    taken after a batch stores (epoch, position) and `batch_stream(..., epoch, skip=position)` continues after it."""
    empty = 0
    while True:
        it = iter(make_loader(epoch))
        pos = 0
        while True:
            batch = next(it, None)
            if not agree(batch is not None):
                break
            pos += 1
            if pos <= skip:
                continue          # replaying the interrupted epoch up to the checkpoint
            yield epoch, pos, batch
        if pos == 0:
            empty += 1
            if empty > max_empty_epochs:
                raise RuntimeError(f"the training data yields no batches in epoch {epoch} (too few samples for the "
                                   f"batch size on every rank?)")
        else:
            empty = 0
        epoch, skip = epoch + 1, 0


def micro_batches(stream: Iterator[tuple[int, int, Any]], n: int) -> Iterator[list[tuple[int, int, Any]]]:
    """Group the stream's (epoch, position, batch) items into lists of `n`, one list per optimizer step.

    A group may span an epoch boundary (the tail of epoch e with the head of e+1): every batch trains exactly once,
    and the optimizer step always averages `n` micro-batches. The last item's (epoch, position) is where a checkpoint
    taken after the step resumes. (Dropping the partial group at an epoch end, as the loop once did, also threw away
    the next epoch's first batch and changed the step's data from run to run of grad_accum.)
    """
    while True:
        group = []
        while len(group) < n:
            group.append(next(stream))
        yield group
