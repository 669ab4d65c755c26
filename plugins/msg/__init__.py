"""MSG (Sun et al., NeurIPS 2024): manifold spiking graph networks trained by differentiation via
the manifold.

* model ``msg`` (:mod:`.model`): spiking graph-convolution stages that move points on the Lorentz
  (hyperbolic), sphere or Euclidean manifold (geoopt, the ``graph`` extra);
* gradient method ``dvm`` (:mod:`.method`): spikes as constants, the backward through closed-form
  expmap Jacobians (:mod:`.manifolds`), memory and backward time independent of ``T``;
* metric ``graph_energy`` (:mod:`.energy`): the papers' theoretical energy estimate.

geoopt is imported only when an ``msg`` model is built, so the rest of snnarena loads without it;
suite validation refuses ``msg`` with a message naming the extra (``pip install "snnarena[graph]"``).
"""

from __future__ import annotations

import snnarena
from snnarena.registry import Register

from .energy import GraphEnergy
from .method import DvM
from .model import MSG

__all__ = ["MSG", "DvM", "GraphEnergy"]


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(MSG)


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(DvM)


@snnarena.hookimpl
def register_metrics(register: Register) -> None:
    register(GraphEnergy)
