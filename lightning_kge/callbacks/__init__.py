"""Lightning callbacks of the project: checkpoints, the divergence guard, the test report and the countries' AUC-PR."""

from lightning_kge.callbacks.auc_pr import RegionAUCPR
from lightning_kge.callbacks.checkpoint import Checkpoints
from lightning_kge.callbacks.divergence import DivergenceGuard
from lightning_kge.callbacks.report import TestReport

__all__ = ["Checkpoints", "DivergenceGuard", "RegionAUCPR", "TestReport"]
