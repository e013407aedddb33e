"""Data-parallel `toolkit anonymize`: which inputs this process handles, on which device, and the merge.

The process group comes from the launcher (torchrun, or `accelerate launch`) through Accelerate's
`PartialState`; a plain `toolkit anonymize` is a group of one. Inputs are dealt round-robin over the
sorted input list, so every process gets its fair share even of a handful of files (a hash of the path
left one process idle now and then). Resuming needs no fixed split: every process reads every
process's journal, so an input finished by any earlier process is skipped whatever the split is now.
"""

from __future__ import annotations

from dataclasses import dataclass


def shard_of(index: int, world_size: int) -> int:
    """The process (0..world_size-1) that handles the `index`-th input of the sorted input list."""
    return index % world_size


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        return shard_of(index, self.world_size) == self.rank

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group (a group left to interpreter exit can abort the process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def gather(self, obj) -> list | None:
        """Every process's `obj`, in rank order, on the main process (None elsewhere)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        """The main process's `obj`, on every process."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current_shard(device: str = "auto") -> Shard:
    """This process's place in the launcher's process group and its own device.

    device: "cpu", "cuda" or "auto" (a GPU when one is present). Under a multi-process launcher each
    process takes the GPU of its local rank (Accelerate's choice); on CPU the group talks over gloo.
    """
    import os

    import torch

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown --device {device!r}; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA GPU is available (use --device auto or cpu)")
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Not launched as a group: no process group to join (and nothing for Accelerate to set up).
        return Shard(0, 1, "cpu" if use_cpu else ("cuda" if device == "auto" else device))
    from accelerate import PartialState

    state = PartialState(cpu=use_cpu)
    return Shard(state.process_index, state.num_processes, "cpu" if use_cpu else str(state.device))
