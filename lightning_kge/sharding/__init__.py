"""Entity tables sharded across processes with TorchRec + FBGEMM: ``strategy=torchrec``.

Importing this package imports neither TorchRec nor FBGEMM (they are optional, installed by
``scripts/install-torchrec.sh``); using the strategy without them is a one-line error naming that command.

- :mod:`~lightning_kge.sharding.packages`: which TorchRec/FBGEMM set matches the installed torch;
- :mod:`~lightning_kge.sharding.table`: :class:`ShardedEntityTable`, a model's entity table spread over
  processes;
- :mod:`~lightning_kge.sharding.optimizers`: the fused optimizers, and the one optimizer Lightning steps;
- :mod:`~lightning_kge.sharding.ranking`: exact filtered ranking with each process scoring its own rows;
- :mod:`~lightning_kge.sharding.checkpoint`: sharded checkpoint folders, read as data;
- :mod:`~lightning_kge.sharding.folders`: publishing a checkpoint folder atomically;
- :mod:`~lightning_kge.sharding.strategy`: :class:`TorchRecStrategy`, the Lightning strategy.
"""
