"""Knowledge-graph embedding models; each scores a query against candidate entities.

``__all__`` lists the base class and every model; the contract suite in ``tests/`` runs for
each model listed here.
"""

from lightning_kge.models.base import KGEModel
from lightning_kge.models.complex import ComplEx
from lightning_kge.models.distmult import DistMult
from lightning_kge.models.protate import pRotatE
from lightning_kge.models.rotate import RotatE
from lightning_kge.models.transe import TransE

__all__ = ["KGEModel", "RotatE", "TransE", "DistMult", "ComplEx", "pRotatE"]
