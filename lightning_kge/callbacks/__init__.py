"""Lightning callbacks of the project: the test report and the countries' AUC-PR."""

from lightning_kge.callbacks.auc_pr import RegionAUCPR
from lightning_kge.callbacks.report import TestReport

__all__ = ["RegionAUCPR", "TestReport"]
