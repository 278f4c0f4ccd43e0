"""A Hydra sweeper that searches hyperparameters with Optuna (``hydra/sweeper=lightning_kge_optuna``)."""
