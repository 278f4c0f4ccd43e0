"""Filtered ranking metrics."""

from lightning_kge.metrics.ranking import RankingMetrics, filtered_ranks

__all__ = ["RankingMetrics", "filtered_ranks"]
