"""A client project's own Hydra app that composes lightning_kge's configs (``pkg://lightning_kge.conf``).

Its ``conf/app.yaml`` starts from the package's ``config`` (every group: model, sampler, data, optimizer,
trainer, …) and overrides what the project needs; the command line overrides the rest as usual:

    python app.py model=transe trainer.max_steps=200

Works from an installed package (editable or not): ``hydra.searchpath`` names the package's configs.
"""

from typing import Any

import hydra
from omegaconf import DictConfig

from lightning_kge.errors import reports_user_errors
from lightning_kge.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    metrics = train(cfg)
    print(f"test MRR {metrics['test/mrr']:.3f}")
    return metrics


if __name__ == "__main__":
    main()
