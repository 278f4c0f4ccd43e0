"""The entity table of a model, sharded across processes by TorchRec: rows moved by all-to-all, updated by
FBGEMM's fused optimizer in the backward pass.

:class:`ShardedEntityTable` takes the place of a model's ``entity`` table (an ``nn.Embedding``) and answers
the lookups a model makes, ``table(ids)``, so the models need no change. Every lookup is a collective
operation: all processes call it the same number of times, each with its own ids (any number), and each
gets its own rows. Inside :meth:`~ShardedEntityTable.reading_rows` a training step's entity rows are read
by one lookup and every lookup of the step is served from them; their gradient goes back to the owners of
the rows (the mean over processes, as DDP averages gradients) and the fused optimizer updates those rows
there. Inside :meth:`~ShardedEntityTable.scoring_own_rows` the table's ``weight`` is this process's own
rows, which evaluation scores without moving any row.

The table is not registered as a parameter of the model: ``DistributedDataParallel``, the configured
optimizer, ``.to()`` and Lightning's teardown never see it (they would broadcast rank 0's rows over the
others', or gather it). Its ``state_dict`` entry keeps the name of the table it replaces
(``…entity.weight``), as a ``ShardedTensor`` that ``torch.distributed.checkpoint`` saves shard by shard.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_kge.errors import require
from lightning_kge.sharding.packages import require_torchrec

TABLE = "entity"
"""The table's name inside TorchRec (its optimizer state keys start with it)."""
FEATURE = "ids"
"""The one feature that reads the table."""
SHARDINGS = ("row_wise", "table_wise")
"""How the rows are spread: ``row_wise`` (contiguous row ranges, one per process), ``table_wise`` (all rows
on process 0: TorchRec's placement for many small tables, here for comparison)."""


@dataclass
class ServedRows:
    """The rows of a training step, read by one lookup: ``ids`` ``(U,)`` sorted and distinct, ``rows``
    ``(U, w)`` (their gradient goes back to their owners). Models read them as a step's rows: by
    :meth:`lookup`, and a fused kernel through :attr:`table` and :meth:`positions`."""

    ids: Tensor
    rows: Tensor

    @property
    def table(self) -> Tensor:
        """The rows, as the table a fused kernel reads candidates from (with :meth:`positions`)."""
        return self.rows

    def positions(self, ids: Tensor) -> Tensor:
        """Where each of ``ids`` lies in :attr:`rows`; an id that is not among them is an error (checked on CPU)."""
        flat = ids.contiguous()
        positions = torch.searchsorted(self.ids, flat)
        if flat.device.type == "cpu" and flat.numel():
            found = self.ids[positions.clamp(0, max(len(self.ids) - 1, 0))]
            if not torch.equal(found, flat):
                raise IndexError(f"entity {flat[found != flat][0].item()} was not read for this training step")
        return positions

    def lookup(self, ids: Tensor) -> Tensor:
        """Rows of ``ids``: ``ids.shape + (w,)``."""
        return self.rows[self.positions(ids.to(self.ids.device))]


class ShardedEntityTable(nn.Module):
    """An entity table ``(E, w)`` whose rows live on the processes of ``group``, trained by a fused optimizer.

    Args:
        weight: the initial table ``(E, w)`` (every process gives the same one); each process copies its
            rows and keeps no other.
        sharding: ``row_wise`` or ``table_wise`` (:data:`SHARDINGS`).
        fused_params: FBGEMM's optimizer settings (``optimizer``, ``learning_rate``, ``eps``, …), see
            :func:`lightning_kge.sharding.optimizers.fused_params`.
        group: the process group (all processes of the run).
        device: where the rows live (``cpu`` or this process's GPU).
    """

    def __init__(self, weight: Tensor, sharding: str, fused_params: Mapping[str, Any],
                 group: dist.ProcessGroup, device: torch.device) -> None:
        require(sharding in SHARDINGS, "sharding", sharding, " or ".join(SHARDINGS))
        require(weight.dim() == 2, "weight", tuple(weight.shape), "a table (E, w)")
        super().__init__()
        require_torchrec()
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise, table_wise
        from torchrec.distributed.types import ShardingEnv
        from torchrec.modules.embedding_configs import EmbeddingConfig
        from torchrec.modules.embedding_modules import EmbeddingCollection

        self.num_embeddings, self.embedding_dim = int(weight.shape[0]), int(weight.shape[1])
        self.sharding = sharding
        self.world_size, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.device = torch.device(device)
        config = EmbeddingConfig(name=TABLE, embedding_dim=self.embedding_dim, num_embeddings=self.num_embeddings,
                                 feature_names=[FEATURE])
        collection = EmbeddingCollection(tables=[config], device=torch.device("meta"))
        # "fused": FBGEMM's kernel with the optimizer in its backward (CPU's default, "dense", gives wrong
        # shapes for sequence lookups on CPU).
        generator = row_wise(compute_kernel="fused") if sharding == "row_wise" else table_wise(
            rank=0, compute_kernel="fused")
        sharder = EmbeddingCollectionSharder(fused_params=dict(fused_params))
        plan = construct_module_sharding_plan(collection, {TABLE: generator}, sharder=sharder,
                                              local_size=self.world_size, world_size=self.world_size,
                                              device_type=self.device.type)
        sharded = sharder.shard(collection, plan, ShardingEnv.from_process_group(group), self.device)
        object.__setattr__(self, "collection", sharded)  # not a child: hidden from parameters(), DDP, .to()
        self.step_rows: ServedRows | None = None
        """The rows of the running training step (inside :meth:`reading_rows`), or ``None``."""
        self._scoring = False
        self.load_rows(weight)

    # --- rows held here -------------------------------------------------------------------------------
    def sharded_weight(self) -> Any:
        """The table as TorchRec keeps it: a ``ShardedTensor`` whose local shard is this process's rows (live)."""
        return self.collection.state_dict()[f"embeddings.{TABLE}.weight"]

    def own_rows(self) -> tuple[int, Tensor]:
        """``(offset, rows)``: this process's rows ``(n, w)`` (a view of the live table), which are the rows
        ``offset … offset + n − 1``; ``n`` may be 0 (``table_wise`` on processes other than 0)."""
        shards = self.sharded_weight().local_shards()
        if not shards:
            return 0, torch.empty(0, self.embedding_dim, device=self.device)
        shard = shards[0]
        return int(shard.metadata.shard_offsets[0]), shard.tensor

    @property
    def weight(self) -> Tensor:
        """This process's own rows, inside :meth:`scoring_own_rows` only (the whole table is never held)."""
        if not self._scoring:
            raise AttributeError("a sharded entity table has no whole weight: its rows are spread over processes "
                                 "(read rows with table(ids), or this process's own rows in scoring_own_rows())")
        return self.own_rows()[1]

    @torch.no_grad()
    def load_rows(self, value: Any) -> None:
        """Copy this process's rows from a whole table ``(E, w)`` or from a ``ShardedTensor`` of the same layout."""
        offset, rows = self.own_rows()
        if hasattr(value, "local_shards"):
            shards = value.local_shards()
            if shards and shards[0].tensor.data_ptr() == rows.data_ptr():
                return  # the live table itself (a checkpoint loaded in place)
            local = shards[0].tensor if shards else rows[:0]
        else:
            require(tuple(value.shape) == (self.num_embeddings, self.embedding_dim), "weight", tuple(value.shape),
                    f"a table of shape {(self.num_embeddings, self.embedding_dim)}")
            local = value[offset:offset + rows.shape[0]]
        rows.copy_(local.to(rows.device, rows.dtype))

    # --- lookups --------------------------------------------------------------------------------------
    def lookup(self, ids: Tensor) -> Tensor:
        """Rows of ``ids`` (any shape) -> ``ids.shape + (w,)``, through TorchRec: a collective call.

        The ids go to the processes that own their rows and the rows come back (two all-to-alls); under
        gradient, the rows' gradient goes back to their owners in the backward pass, where the fused
        optimizer updates them.
        """
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        flat = ids.reshape(-1).to(self.device, torch.long).contiguous()  # FBGEMM reads the ids' memory as is
        count = flat.numel()
        if count == 0:  # every process must take part: look up one row and return none
            flat = flat.new_zeros(1)
        features = KeyedJaggedTensor(keys=[FEATURE], values=flat, lengths=torch.ones_like(flat))
        rows = self.collection(features)[FEATURE].values()
        return rows[:count].reshape(*ids.shape, self.embedding_dim)

    def forward(self, ids: Tensor) -> Tensor:
        """Rows of ``ids``: served from the step's rows inside :meth:`reading_rows`, from this process's own
        rows inside :meth:`scoring_own_rows` (``ids`` then count from its first row), else :meth:`lookup`."""
        if self._scoring:
            return self.own_rows()[1][ids]
        if self.step_rows is not None:
            return self.step_rows.lookup(ids)
        return self.lookup(ids)

    @contextmanager
    def reading_rows(self, ids: Tensor) -> Iterator[None]:
        """Read the rows of ``ids`` (every entity of a training step) by one lookup; serve every lookup inside
        from them (:attr:`step_rows`; each id looked up inside must be among ``ids``)."""
        unique = torch.unique(ids.reshape(-1).to(self.device, torch.long))
        self.step_rows = ServedRows(unique, self.lookup(unique))
        try:
            yield
        finally:
            self.step_rows = None

    @contextmanager
    def scoring_own_rows(self) -> Iterator[tuple[int, int]]:
        """Make :attr:`weight` this process's own rows inside, and ``table(i)`` the ``i``-th of them; yields
        ``(offset, n)``: they are the rows of the entities ``offset … offset + n − 1``. No row moves."""
        offset, rows = self.own_rows()
        self._scoring = True
        try:
            yield offset, int(rows.shape[0])
        finally:
            self._scoring = False

    # --- state ----------------------------------------------------------------------------------------
    @property
    def fused_optimizer(self) -> Any:
        """TorchRec's optimizer of the table (a ``KeyedOptimizer``; it updates in the backward pass)."""
        return self.collection.fused_optimizer

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """``{prefix + "weight": ShardedTensor}``: the name of the table replaced, the rows of every process."""
        if destination is None:
            destination = OrderedDict()
        destination[prefix + "weight"] = self.sharded_weight()
        return destination

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        try:
            self.load_rows(state_dict[key])
        except ValueError as error:
            error_msgs.append(f"{key}: {error}")

    def extra_repr(self) -> str:
        offset, rows = self.own_rows()
        return (f"{self.num_embeddings}, {self.embedding_dim}, sharding={self.sharding}, "
                f"rows {offset}…{offset + rows.shape[0] - 1} on process {self.rank} of {self.world_size}")
