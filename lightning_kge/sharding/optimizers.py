"""The fused optimizers of sharded tables: FBGEMM updates the rows a step touched inside the backward pass.

| name | update of a touched row ``i`` (gradient ``g_i``, the mean over processes) | state per row | devices |
|---|---|---|---|
| ``exact_sgd`` | ``θ_i ← θ_i − lr·g_i`` | none | CPU, CUDA |
| ``exact_adagrad`` | ``s_i ← s_i + g_i²``, ``θ_i ← θ_i − lr·g_i / (√s_i + ε)`` (elementwise) | ``w`` reals | CPU, CUDA |
| ``exact_rowwise_adagrad`` | ``s_i ← s_i + mean(g_i²)``, ``θ_i ← θ_i − lr·g_i / (√s_i + ε)`` | 1 real | CPU, CUDA |
| ``adam`` | lazy Adam: moments of the touched rows only | ``2w`` reals | CUDA |
| ``partial_rowwise_adam`` | Adam with a row-wise second moment | ``w + 1`` reals | CUDA |

"Exact": a row looked up several times in a step is updated once, with the sum of its gradients.
FBGEMM's CPU kernels refuse ``adam`` and ``partial_rowwise_adam`` (``Optimizer adam is not supported in
CPU mode``), so they are refused here first, with one line.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_kge.errors import UserError

FUSED_OPTIMIZERS: dict[str, tuple[str, bool]] = {
    "exact_sgd": ("EXACT_SGD", True),
    "exact_adagrad": ("EXACT_ADAGRAD", True),
    "exact_rowwise_adagrad": ("EXACT_ROWWISE_ADAGRAD", True),
    "adam": ("ADAM", False),
    "partial_rowwise_adam": ("PARTIAL_ROWWISE_ADAM", False),
}
"""name -> (FBGEMM's ``EmbOptimType`` member, whether FBGEMM's CPU kernels have it)."""


def fused_params(name: str, lr: float, eps: float, betas: tuple[float, float], device_type: str) -> dict[str, Any]:
    """FBGEMM's settings of the fused optimizer ``name`` (the sharder's ``fused_params``).

    Raises:
        UserError: ``adam`` or ``partial_rowwise_adam`` on a CPU (one line, with the CPU choices).
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    member, on_cpu = FUSED_OPTIMIZERS[name]
    if device_type == "cpu" and not on_cpu:
        choices = ", ".join(n for n, (_, cpu) in FUSED_OPTIMIZERS.items() if cpu)
        raise UserError(f"the fused optimizer {name} runs on CUDA only (FBGEMM's CPU kernels do not have it)",
                        "config key trainer.strategy.table_optimizer",
                        f"on CPUs choose {choices}; or train on GPUs (trainer=multi_gpu)")
    params: dict[str, Any] = {"optimizer": EmbOptimType[member], "learning_rate": lr, "eps": eps}
    if name in ("adam", "partial_rowwise_adam"):
        params.update(beta1=betas[0], beta2=betas[1])
    return params


class FusedAndDense(torch.optim.Optimizer):
    """One optimizer for Lightning: the configured one for the dense parameters, the fused one of the tables.

    ``step(closure)`` first gives the fused tables their learning rate, ``lr · factor`` with ``factor`` the
    configured optimizer's first group's ``lr / initial_lr`` (``1`` without a schedule), so a learning-rate
    scheduler on the configured optimizer drives both; then runs the closure (forward and backward: the
    fused optimizer updates the touched rows there) and steps the dense optimizer. Its state is the dense
    optimizer's and the fused one's (``ShardedTensor``s, saved shard by shard).

    Args:
        dense: the configured optimizer of every parameter but the tables.
        fused: TorchRec's ``KeyedOptimizer`` of the sharded tables.
        lr: the fused optimizer's learning rate before any schedule.
    """

    def __init__(self, dense: torch.optim.Optimizer, fused: Any, lr: float) -> None:
        self.dense, self.fused, self.lr = dense, fused, lr
        self.defaults = dense.defaults
        self.param_groups = dense.param_groups  # what schedulers, clipping and LR monitors see
        self.state = dense.state

    def table_lr(self) -> float:
        """The fused tables' learning rate now: :attr:`lr` times the dense schedule's factor."""
        group = self.dense.param_groups[0]
        return self.lr * float(group["lr"]) / float(group.get("initial_lr", group["lr"]))

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        rate = self.table_lr()
        for group in self.fused.param_groups:
            group["lr"] = rate
        self.fused.step()  # TorchRec pushes the learning rate into FBGEMM here; the update is in the backward
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.dense.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        fused = self.fused.state_dict()["state"]
        return {"dense": self.dense.state_dict(), "table_lr": self.table_lr(),
                "fused": {key: value for states in fused.values() for key, value in states.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.dense.load_state_dict(state_dict["dense"])
        live = {key: value for states in self.fused.state_dict()["state"].values() for key, value in states.items()}
        for key, value in state_dict.get("fused", {}).items():
            if key in live:
                copy_rows(live[key], value)


@torch.no_grad()
def copy_rows(live: Any, value: Any) -> None:
    """Copy ``value`` (a ``ShardedTensor`` of the same layout, or a whole tensor) into the local shards of ``live``."""
    for shard in live.local_shards():
        if hasattr(value, "local_shards"):
            source = next((s.tensor for s in value.local_shards()
                           if s.metadata.shard_offsets == shard.metadata.shard_offsets), None)
            if source is None or source.data_ptr() == shard.tensor.data_ptr():
                continue
        else:
            index = tuple(slice(o, o + n) for o, n in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes))
            source = value[index]
        shard.tensor.copy_(source.to(shard.tensor.device, shard.tensor.dtype))
