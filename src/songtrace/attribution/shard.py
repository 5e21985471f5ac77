"""Sharding a stage over the ranks of a torchrun job: which rows a rank owns, shard files with completion markers, merging.

`torchrun --nproc-per-node K songtrace fisher | attribute | index build | selfinfluence ...` starts K processes;
`distributed(device)` joins them into one process group (gloo on CPU, nccl on GPU; more machines
are torchrun's `--nnodes` and rendezvous, nothing here). The training set's rows are cut into
shards; every rank computes a contiguous block of the shards still missing and writes each one
atomically as it finishes, so a shard file that exists is finished (it is its own completion
marker). The ranks then meet and merge. A rank that dies loses only the shard it was computing; a
rerun, with any number of ranks, skips every finished shard. Two shapes of result:

- per-row results (base losses, scores, the queries' deltas): `map_shards` computes `compute(rows)` per shard
  and concatenates the shards in row order. Shards start at batch boundaries, so every batch holds
  the same items, shapes and code path as in one process: the merged result is bit for bit the
  single-process one.
- sums over rows (the Fisher's squared gradients): `SumShards` keeps one running float64 sum per
  rank, checkpointed with the row ranges it covers; the ranks' sums are all-reduced. Only the order
  of the float64 additions differs from one process (relative error ~1e-16, far below float32).

The fast index keeps its own memory-mapped shards (`index.build_index`) and takes its ranks' blocks
with `Job.block`. The math is not here: callers pass the pure per-shard computation. `Job` is the process's place in
the torchrun job; `Job(rank=r, world=W)` without a process group runs rank r's share alone (tests, time slices).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from songtrace.artifacts import load_safetensors, save_safetensors, write_json
from songtrace.errors import SongtraceError
from songtrace.progress import progress

T = TypeVar("T")
Tensors = dict[str, torch.Tensor]

PLAN_FILE = "plan.json"
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


# --------------------------------------------------------------------------- the job


class ShardsPending(SongtraceError):
    """Shards of other ranks are still missing (a rank's share was run without a process group); a rerun finishes them."""



@dataclasses.dataclass(frozen=True)
class Job:
    """This process's place in a torchrun job: rank `rank` of `world`; `joined` when a process group connects the ranks.

    `Job()` is a single process. Without a process group, `Job(rank=r, world=W)` computes rank r's
    share and skips the collectives (the merge then finds the other ranks' shards missing and waits
    for a later run).
    """

    rank: int = 0
    world: int = 1
    joined: bool = False

    def __post_init__(self) -> None:
        if not (self.world >= 1 and 0 <= self.rank < self.world):
            raise SongtraceError(f"rank {self.rank} of world {self.world}: need world >= 1 and 0 <= rank < world")

    @property
    def main(self) -> bool:
        """The rank that writes the merged artifact (rank 0)."""
        return self.rank == 0

    def block(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous block of `items` (blocks differ in length by at most one)."""
        n = len(items)
        return list(items[self.rank * n // self.world : (self.rank + 1) * n // self.world])

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for without a process group)."""
        if self.joined:
            torch.distributed.barrier()

    def all_reduce_sum(self, tensors: Mapping[str, torch.Tensor]) -> Tensors:
        """Σ over the ranks of each tensor (in place on the given tensors, which are returned)."""
        if self.joined:
            for t in tensors.values():
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return dict(tensors)

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order."""
        if not self.joined:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and hand its result to every rank; a `SongtraceError` there is raised on every rank.

        For what must happen once (preparing a stage directory, listing the missing shards), so all ranks agree.
        """
        if not self.joined:
            return fn()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = ("ok", fn())
            except SongtraceError as e:
                box[0] = ("error", str(e))
        torch.distributed.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise SongtraceError(value)
        return value


SINGLE = Job()


def launched_world() -> int:
    """The number of processes torchrun started (WORLD_SIZE; 1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SongtraceError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


@contextmanager
def distributed(device: str = "cpu") -> Iterator[Job]:
    """Join the torchrun job this process belongs to (gloo for "cpu", nccl for "cuda"); a single process outside torchrun.

    With "cuda" each rank takes GPU LOCAL_RANK of its machine. The process group is closed after the block.
    """
    world = launched_world()
    if world <= 1:
        yield SINGLE
        return
    dist = torch.distributed
    if not dist.is_available():
        raise SongtraceError("this torch build has no torch.distributed; run without torchrun")
    if device not in BACKENDS:
        raise SongtraceError(f"distributed runs need device cpu (gloo) or cuda (nccl), got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SongtraceError("--device cuda under torchrun, but this machine has no CUDA GPU")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    ours = not dist.is_initialized()
    if ours:
        dist.init_process_group(BACKENDS[device])
    try:
        yield Job(dist.get_rank(), dist.get_world_size(), joined=True)
    finally:
        if ours:
            dist.destroy_process_group()


# --------------------------------------------------------------------------- shard plans


def shard_ranges(n_rows: int, shard_rows: int) -> list[range]:
    """Consecutive row ranges of `shard_rows` rows covering 0..n_rows (the last may be shorter)."""
    if shard_rows <= 0:
        raise SongtraceError(f"shard size must be > 0 rows, got {shard_rows}")
    return [range(s, min(n_rows, s + shard_rows)) for s in range(0, n_rows, shard_rows)]


def default_shard_rows(n_rows: int, batch_size: int, world: int, max_batches: int = 16) -> int:
    """A shard size: whole batches (so shards start at batch boundaries), about 8 shards per rank, at most `max_batches` batches."""
    n_batches = -(-n_rows // batch_size)
    per_shard = max(1, min(max_batches, -(-n_batches // (8 * world))))
    return per_shard * batch_size


def aligned(shard_rows: int, batch_size: int) -> int:
    """`shard_rows` rounded up to whole batches, so that every shard starts at a batch boundary."""
    return max(1, -(-shard_rows // batch_size)) * batch_size


def read_plan(root: Path, n_rows: int, shard_rows: int) -> int:
    """The shard size of the plan recorded in `root/plan.json` (kept across reruns so finished shards stay valid), else `shard_rows`."""
    path = root / PLAN_FILE
    if not path.exists():
        return shard_rows
    plan = json.loads(path.read_text())
    if int(plan["n_rows"]) != n_rows:
        raise SongtraceError(f"{path}: the shards cover {plan['n_rows']} rows, this run has {n_rows}; delete {root} to start over")
    return int(plan["shard_rows"])


def write_plan(root: Path, n_rows: int, shard_rows: int) -> None:
    """Record the shard plan beside the shards."""
    write_json(root / PLAN_FILE, {"n_rows": n_rows, "shard_rows": shard_rows})


# --------------------------------------------------------------------------- per-row results


class ShardStore:
    """Finished shards of per-row results: `rows-<start>-<stop>.safetensors`, each written atomically (existence = finished)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, rows: range) -> Path:
        """The file of one shard."""
        return self.root / f"rows-{rows.start:09d}-{rows.stop:09d}.safetensors"

    def done(self, rows: range) -> bool:
        """Whether the shard is finished."""
        return self.path(rows).exists()

    def save(self, rows: range, tensors: Mapping[str, torch.Tensor]) -> None:
        """Write a finished shard (atomically: a half-written shard never looks finished)."""
        save_safetensors(self.path(rows), tensors, metadata={"start": str(rows.start), "stop": str(rows.stop)})

    def load(self, rows: range) -> Tensors:
        """A finished shard's tensors (on the CPU)."""
        return load_safetensors(self.path(rows))

    def clear(self) -> None:
        """Remove every shard (after the merged result is written)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _concat(parts: Sequence[Mapping[str, torch.Tensor]], row_dim: int) -> Tensors:
    """Per-shard tensors joined along the row axis, in the given (row) order."""
    return {k: torch.cat([p[k] for p in parts], dim=row_dim) for k in parts[0]}


def map_shards(
    n_rows: int,
    shard_rows: int,
    compute: Callable[[range], Mapping[str, torch.Tensor]],
    job: Job = SINGLE,
    store: ShardStore | None = None,
    row_dim: int = -1,
    desc: str = "shards",
    unit: str = "shards",
) -> Tensors:
    """`compute(rows)` for every shard of rows 0..n_rows, spread over the ranks; the results joined in row order on every rank.

    With a `store`, finished shards are skipped (their files are read back) and each new shard is
    written as soon as it is done; the store's plan fixes the shard size across reruns. Without one,
    the ranks exchange their shards in memory. Raises `ShardsPending` while shards are missing (a
    rank's share run alone, without a process group). A progress bar (`desc`, `unit`) counts this
    rank's pending shards.
    """
    if store is not None:
        shard_rows = job.main_first(lambda: _prepare_store(store, n_rows, shard_rows))
    shards = shard_ranges(n_rows, shard_rows)
    pending = job.main_first(lambda: [(s.start, s.stop) for s in shards if store is None or not store.done(s)])
    mine: dict[int, Tensors] = {}
    todo = job.block(pending)
    for start, stop in progress(todo, total=len(todo), desc=desc if job.world == 1 else f"{desc} rank {job.rank}", unit=unit):
        rows = range(start, stop)
        out = {k: v.detach().cpu() for k, v in compute(rows).items()}
        if store is not None:
            store.save(rows, out)
        else:
            mine[start] = out
    job.barrier()
    if store is not None:
        missing = [s for s in shards if not store.done(s)]
        if missing:
            raise ShardsPending(f"{store.root}: {len(missing)} of {len(shards)} shards are not finished yet; run again to finish them")
        out = _concat([store.load(s) for s in shards], row_dim)
        job.barrier()  # every rank has read the shards before rank 0 may clear the store
        return out
    if not job.joined and job.world > 1:
        raise ShardsPending(f"rank {job.rank} of {job.world} ran alone without a shard store; the other ranks' rows are missing")
    gathered: dict[int, Tensors] = {}
    for part in job.all_gather(mine):
        gathered.update(part)
    return _concat([gathered[s.start] for s in shards], row_dim)


def _prepare_store(store: ShardStore, n_rows: int, shard_rows: int) -> int:
    """Create the store's directory and plan (or read the existing plan); the shard size to use."""
    store.root.mkdir(parents=True, exist_ok=True)
    rows = read_plan(store.root, n_rows, shard_rows)
    write_plan(store.root, n_rows, rows)
    return rows


# --------------------------------------------------------------------------- sums over rows


Span = tuple[int, int]


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted, non-overlapping row spans covering the same rows (adjacent spans joined)."""
    out: list[list[int]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return [(a, b) for a, b in out]


def missing_spans(n_rows: int, covered: Sequence[Span]) -> list[Span]:
    """The row spans of 0..n_rows not in `covered`."""
    out, at = [], 0
    for start, stop in merge_spans(covered):
        if start > at:
            out.append((at, start))
        at = max(at, stop)
    if at < n_rows:
        out.append((at, n_rows))
    return out


def batches_of(spans: Sequence[Span], batch_size: int) -> list[range]:
    """The spans cut into batches of `batch_size` rows, aligned to multiples of `batch_size` (as one process would cut them)."""
    out = []
    for start, stop in spans:
        at = start
        while at < stop:
            end = min(stop, (at // batch_size + 1) * batch_size)
            out.append(range(at, end))
            at = end
    return out


class SumShards:
    """Running float64 sums over rows, one file per rank (`rank-<r>.safetensors`), each recording the row spans it covers.

    A rank resumes its own file; files of ranks beyond the current world (a rerun with fewer ranks)
    are kept and added to the merge by rank 0, so no covered row is computed twice.
    """

    def __init__(self, root: str | Path, job: Job = SINGLE) -> None:
        self.root = Path(root)
        self.job = job

    def path(self, rank: int) -> Path:
        """The file of one rank's sums."""
        return self.root / f"rank-{rank:05d}.safetensors"

    def files(self) -> dict[int, Path]:
        """Rank -> its sums file, for every rank that wrote one."""
        if not self.root.is_dir():
            return {}
        return {int(p.stem.split("-")[1]): p for p in sorted(self.root.glob("rank-*.safetensors"))}

    @staticmethod
    def spans_of(path: Path) -> list[Span]:
        """The row spans a sums file covers (from its metadata; the tensors are not read)."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises several types for a corrupt file
            raise SongtraceError(f"{path}: not a readable partial-sums file ({e}); delete it to recompute its rows") from None
        return [(int(a), int(b)) for a, b in json.loads(meta.get("spans", "[]"))]

    def covered(self) -> list[Span]:
        """The rows covered by every rank's file together."""
        return merge_spans([s for p in self.files().values() for s in self.spans_of(p)])

    def load(self, like: Mapping[str, torch.Tensor], rank: int | None = None) -> tuple[Tensors, list[Span]]:
        """A rank's sums (on the device of `like`, float64) and spans; zeros and no spans when it has no file yet."""
        path = self.path(self.job.rank if rank is None else rank)
        device = next(iter(like.values())).device if like else torch.device("cpu")
        if not path.exists():
            return {k: torch.zeros(v.shape, dtype=torch.float64, device=device) for k, v in like.items()}, []
        sums = load_safetensors(path)
        if set(sums) != set(like) or any(sums[k].shape != like[k].shape for k in like):
            raise SongtraceError(f"{path}: the partial sums do not match the target parameters; rerun with --overwrite")
        return {k: v.to(device=device, dtype=torch.float64) for k, v in sums.items()}, self.spans_of(path)

    def save(self, sums: Mapping[str, torch.Tensor], spans: Sequence[Span]) -> None:
        """Checkpoint this rank's sums and the spans they cover (atomically)."""
        self.root.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.path(self.job.rank), sums, metadata={"spans": json.dumps(merge_spans(spans))})

    def merged(self, sums: Mapping[str, torch.Tensor]) -> Tensors:
        """Σ over all ranks' sums: this rank's `sums` all-reduced, plus (on rank 0) the files of ranks beyond the world."""
        total = {k: v.clone() for k, v in sums.items()}
        if self.job.main:
            for rank, _ in sorted(self.files().items()):
                if rank >= self.job.world:
                    extra, _ = self.load(total, rank)
                    total = {k: total[k] + extra[k] for k in total}
        return self.job.all_reduce_sum(total)

    def clear(self) -> None:
        """Remove every rank's file (after the merged result is written)."""
        shutil.rmtree(self.root, ignore_errors=True)
