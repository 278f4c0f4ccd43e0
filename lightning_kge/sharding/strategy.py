"""``strategy=torchrec``: Lightning's DDP with the entity table sharded across processes by TorchRec + FBGEMM.

A thin strategy on top of TorchRec (no Lightning strategy for it exists: torchrec#3114). What it adds to
the project's :class:`~lightning_kge.strategies.DDPStrategy` (Lightning's, with a timeout in seconds and
one line naming a rank that stopped answering):

- **setup (every stage)**: the model's ``entity`` table becomes a
  :class:`~lightning_kge.sharding.table.ShardedEntityTable` (rows spread over the processes, a fused
  optimizer), before DDP wraps the rest; DDP and the configured optimizer train the relations and any
  dense parameter. The table is invisible to DDP (no broadcast of process 0's rows over the others') and
  to teardown (no ``.cpu()``, no gathering);
- **training step**: the step's entity rows (heads, tails, negatives) are read by one lookup
  (:meth:`ShardedEntityTable.reading_rows`); the model's lookups are served from them;
- **optimizer**: :class:`~lightning_kge.sharding.optimizers.FusedAndDense`, which passes the configured
  learning-rate schedule on to the fused tables;
- **evaluation**: every process takes every query, scores its own rows and the counts are summed
  (:mod:`lightning_kge.sharding.ranking`): exact filtered ranking without gathering the table;
- **checkpoints**: folders written with ``torch.distributed.checkpoint`` and read as data
  (:mod:`lightning_kge.sharding.checkpoint`), restored after setup, into any number of processes.

What a fused table cannot follow is refused with one line: gradient clipping, gradient accumulation, the
L3 regularization (it reads whole tables), a compiled step, the ``cached`` sampler (its negatives are not
among the step's) and ``Trainer.predict``.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import DataLoader

from lightning_kge.data.distributed import UnpaddedDistributedSampler
from lightning_kge.errors import UserError, require
from lightning_kge.sampling.cached import CacheSelection
from lightning_kge.sharding import checkpoint as sharded_checkpoint
from lightning_kge.sharding.optimizers import FUSED_OPTIMIZERS, FusedAndDense, fused_params
from lightning_kge.sharding.packages import require_torchrec
from lightning_kge.sharding.table import SHARDINGS, ShardedEntityTable
from lightning_kge.strategies import DDPStrategy

SETTINGS_KEY = "lightning_kge_sharding"
"""The checkpoint entry recording the table's settings (a resumed run must use the same optimizer)."""


class TorchRecStrategy(DDPStrategy):
    """DDP for the dense parameters, the entity table sharded by TorchRec and trained by a fused optimizer.

    Args:
        sharding: ``row_wise`` (each process holds ``E / N`` rows and their optimizer state) or
            ``table_wise`` (process 0 holds the table; for comparison).
        table_optimizer: the fused optimizer of the table: ``exact_sgd``, ``exact_adagrad``,
            ``exact_rowwise_adagrad`` (CPU and CUDA), ``adam``, ``partial_rowwise_adam`` (CUDA only);
            see :mod:`lightning_kge.sharding.optimizers`.
        table_lr: its learning rate (times the configured schedule's factor, if any).
        eps: its ``ε``.
        betas: ``(β₁, β₂)`` of ``adam`` and ``partial_rowwise_adam``.
        timeout: seconds a process waits for the others in a collective operation (as ``strategy=ddp``).
        process_group_backend: ``None`` (nccl on GPUs, gloo on CPUs), or a backend name.
        start_method: ``popen`` (the command is run again for each process), the only one tested.

    Raises:
        UserError: TorchRec or FBGEMM is not installed (the message names the install command).
    """

    strategy_name = "torchrec"

    def __init__(
        self,
        sharding: str = "row_wise",
        table_optimizer: str = "exact_rowwise_adagrad",
        table_lr: float = 0.1,
        eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
        timeout: float = 600.0,
        process_group_backend: str | None = None,
        start_method: str = "popen",
    ) -> None:
        require(sharding in SHARDINGS, "sharding", sharding, " or ".join(SHARDINGS))
        require(table_optimizer in FUSED_OPTIMIZERS, "table_optimizer", table_optimizer, ", ".join(FUSED_OPTIMIZERS))
        require(isinstance(table_lr, (int, float)) and not isinstance(table_lr, bool) and table_lr > 0, "table_lr",
                table_lr, "a number > 0")
        require(isinstance(eps, (int, float)) and eps > 0, "eps", eps, "a number > 0")
        require(len(betas) == 2 and all(0 <= b < 1 for b in betas), "betas", betas, "two numbers in [0, 1)")
        require(start_method == "popen", "start_method", start_method,
                "popen (each process runs the command again; strategy=torchrec is not tested with spawn)")
        require_torchrec()
        super().__init__(timeout=timeout, process_group_backend=process_group_backend)
        self.sharding = sharding
        self.table_optimizer = table_optimizer
        self.table_lr = float(table_lr)
        self.eps = float(eps)
        self.betas = (float(betas[0]), float(betas[1]))

    # --- settings ------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The table's training settings, kept in checkpoints (``sharding`` may change on resume)."""
        return {"sharding": self.sharding, "table_optimizer": self.table_optimizer, "table_lr": self.table_lr,
                "eps": self.eps, "betas": list(self.betas)}

    @property
    def table(self) -> ShardedEntityTable | None:
        """The sharded entity table of the module, once set up."""
        module = self.lightning_module
        entity = getattr(getattr(module, "model", None), "entity", None)
        return entity if isinstance(entity, ShardedEntityTable) else None

    # --- setup ---------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer) -> None:
        self.refuse_unsupported(trainer)
        self.shard(self.lightning_module)
        super().setup(trainer)

    def refuse_unsupported(self, trainer: L.Trainer) -> None:
        """One line for each training setting a fused, sharded table cannot follow (when fitting)."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        fix = "or train with strategy=ddp"
        if trainer.gradient_clip_val:
            raise UserError("fused tables are updated inside the backward pass and never hold a gradient to clip",
                            "config key trainer.gradient_clip_val", f"set trainer.gradient_clip_val=null, {fix}")
        if trainer.accumulate_grad_batches != 1:
            raise UserError("fused tables are updated at every backward pass, so gradients cannot be accumulated",
                            "config key trainer.accumulate_grad_batches",
                            f"set trainer.accumulate_grad_batches=1 and a larger data.batch_size, {fix}")
        module = self.lightning_module
        if getattr(module, "regularization", 0):
            raise UserError("the L3 regularization reads whole tables, which no process holds when sharded",
                            "config key module.regularization", f"set module.regularization=0, {fix}")
        if getattr(module, "compile_step", None) is not None:
            raise UserError("a compiled step cannot call TorchRec's lookups", "config key module.compile_step",
                            f"set module.compile_step=null, {fix}")
        factory = getattr(module, "optimizer_factory", None)
        while isinstance(factory, functools.partial):
            factory = factory.func
        if getattr(factory, "sparse_gradients", False):
            raise UserError("a sparse optimizer is for tables kept whole on each process; here the entity table has "
                            "its own fused optimizer (trainer.strategy.table_optimizer)", "config key optimizer",
                            "use optimizer=adam for the relations and dense parameters")
        if isinstance(getattr(module, "selection", None), CacheSelection):
            raise UserError("the cached sampler draws negatives from per-query caches, outside the rows a sharded "
                            "step reads", "config key sampler", f"use sampler=self_adversarial (or uniform), {fix}")

    def shard(self, module: L.LightningModule) -> None:
        """Replace ``module.model.entity`` by a :class:`ShardedEntityTable` holding this process's rows."""
        model = getattr(module, "model", None)
        entity = getattr(model, "entity", None)
        if isinstance(entity, ShardedEntityTable):
            return
        if not isinstance(entity, nn.Embedding):
            raise UserError(f"strategy=torchrec shards a model's entity table (an nn.Embedding named entity); "
                            f"{type(model).__name__} has none", "config key trainer.strategy",
                            "train this model with strategy=ddp")
        width = int(entity.weight.shape[1])
        if width % 4:
            multiple = 4 // math.gcd(4, int(getattr(model, "entity_multiple", 1)))
            raise UserError(f"FBGEMM's tables need rows of a multiple of 4 reals; the entity rows have {width}",
                            "config key model.dim", f"set model.dim to a multiple of {multiple}")
        params = fused_params(self.table_optimizer, self.table_lr, self.eps, self.betas, self.root_device.type)
        with torch.no_grad():
            model.entity = ShardedEntityTable(entity.weight.detach(), self.sharding, params,
                                              torch.distributed.group.WORLD, self.root_device)
        del entity

    def setup_optimizers(self, trainer: L.Trainer) -> None:
        """The module's optimizer (without the table, which is not its parameter), joined to the fused one."""
        super().setup_optimizers(trainer)
        table = self.table
        if table is None:
            return
        if len(self.optimizers) != 1:
            raise UserError(f"strategy=torchrec takes one optimizer, the module configured {len(self.optimizers)}",
                            "configure_optimizers", "return one optimizer (with an optional scheduler)")
        self.optimizers = [FusedAndDense(self.optimizers[0], table.fused_optimizer, self.table_lr)]

    def process_dataloader(self, dataloader: object) -> object:
        """Evaluation loaders give every process every query (each scores its own rows of all of them)."""
        if isinstance(dataloader, DataLoader) and isinstance(dataloader.sampler, UnpaddedDistributedSampler):
            return DataLoader(dataloader.dataset, batch_size=dataloader.batch_size, shuffle=False,
                              collate_fn=dataloader.collate_fn, num_workers=dataloader.num_workers,
                              pin_memory=dataloader.pin_memory)
        return dataloader

    # --- steps ---------------------------------------------------------------------------------------
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """The module's step, its entity rows read once (heads, tails and negatives of the batch)."""
        table = self.table
        batch = args[0] if args else kwargs.get("batch")
        if table is None or not hasattr(batch, "positives"):
            return super().training_step(*args, **kwargs)
        ids = torch.cat([batch.positives[:, 0], batch.positives[:, 2], batch.negatives.reshape(-1)])
        with table.reading_rows(ids):
            return super().training_step(*args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._evaluation_step("val", *args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return self._evaluation_step("test", *args, **kwargs)

    def _evaluation_step(self, stage: str, *args: Any, **kwargs: Any) -> Any:
        from lightning_kge.sharding.ranking import rank_batch

        table = self.table
        batch = args[0] if args else kwargs.get("batch")
        if table is None or not hasattr(batch, "triples"):
            step = super().validation_step if stage == "val" else super().test_step
            return step(*args, **kwargs)
        rank_batch(self.lightning_module, table, batch, stage)
        return None

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError("prediction ranks every entity for each query, which a sharded table holds nowhere",
                        "Trainer.predict with strategy=torchrec",
                        "predict from the checkpoint on one process: python -m lightning_kge.predict ckpt=PATH")

    # --- checkpoints ---------------------------------------------------------------------------------
    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True  # the sharded table must exist to receive its rows

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        """Write the folder ``filepath`` (:func:`~lightning_kge.sharding.checkpoint.save_sharded`): every process
        its own rows, process 0 the rest; a collective call."""
        if self.table is None:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        folder = Path(filepath)
        if self.is_global_zero and (folder.exists() or folder.is_symlink()):
            shutil.rmtree(folder) if folder.is_dir() and not folder.is_symlink() else folder.unlink()
        checkpoint = {**checkpoint, SETTINGS_KEY: {**self.settings(), "processes": self.world_size}}
        sharded_checkpoint.save_sharded(checkpoint, folder, self.is_global_zero, self.barrier)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """A checkpoint for this run: a sharded folder's rows read in place into this run's shards (any number
        of processes saved it), the rest read as data; a single file as DDP reads it."""
        path = Path(checkpoint_path)
        if not sharded_checkpoint.is_sharded_checkpoint(path):
            return super().load_checkpoint(checkpoint_path, weights_only=True)
        from lightning_kge.loading import read_checkpoint

        checkpoint = read_checkpoint(path / sharded_checkpoint.REST, key="ckpt_path")
        self.check_settings(checkpoint.get(SETTINGS_KEY) or {}, str(path))
        targets = self.sharded_targets()
        sharded_checkpoint.load_sharded_into(path, targets)
        for key, value in targets.items():
            sharded_checkpoint.put(checkpoint, key, value)
        return checkpoint

    def sharded_targets(self) -> dict[str, Any]:
        """This run's sharded tensors by their place in a checkpoint: the table, and its optimizer's state
        when training."""
        table = self.table
        assert table is not None
        targets = {"state_dict/model.entity.weight": table.sharded_weight()}
        for optimizer_index, optimizer in enumerate(self.optimizers):
            if isinstance(optimizer, FusedAndDense):
                for key, value in optimizer.state_dict()["fused"].items():
                    targets[f"optimizer_states/{optimizer_index}/fused/{key}"] = value
        return targets

    def check_settings(self, saved: dict[str, Any], where: str) -> None:
        """Refuse to resume training from a checkpoint whose table optimizer differs from this run's."""
        if not saved or not self.optimizers:
            return
        ours = self.settings()
        for key in ("table_optimizer", "table_lr", "eps", "betas"):
            if key in saved and saved[key] != ours[key]:
                raise UserError(f"trainer.strategy.{key} was {saved[key]!r} when the checkpoint was saved, now "
                                f"{ours[key]!r}", where,
                                "resume with the overrides the run was started with (see .hydra/overrides.yaml)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.settings())})"
