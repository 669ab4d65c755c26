"""The three manifolds of MSG and the closed-form Jacobians of its layer map, for the DvM backward.

Points live in an ambient ``R^d`` with the bilinear form ``⟨a, b⟩ = aᵀ G b``:

* ``lorentz`` — the hyperboloid ``{z : ⟨z, z⟩_L = −1, z_0 > 0}`` (curvature −1), ``G = diag(−1, 1, …, 1)``,
  origin ``(1, 0, …, 0)``; ``d = D + 1`` for a ``D``-dimensional manifold;
* ``sphere`` — the unit sphere ``{z : ⟨z, z⟩ = 1}`` (curvature +1), ``G = I``, origin ``(1, 0, …, 0)``;
* ``euclidean`` — ``R^D``, ``G = I``, origin ``0``.

MSG's layer moves a point ``z`` by a vector ``v`` of ``R^d``: ``F(z, v) = Exp_z(P_z v)`` with the
tangent projection ``P_z v = v − σ ⟨z, v⟩ z`` (``σ = ⟨z, z⟩``: −1 Lorentz, +1 sphere; identity for
Euclidean space). geoopt gives ``P_z`` (``proju``) and ``Log_0`` (``logmap``); ``F``'s values
equal geoopt's ``expmap`` (:meth:`Manifold.move` says why it evaluates them itself); the Jacobians
of ``F`` are written out here (:meth:`Manifold.jacobians`, :meth:`Manifold.vjp`). With
``u = P_z v``, ``n = √⟨u, u⟩``, ``c = cos n`` / ``cosh n``, ``S = sin n / n`` / ``sinh n / n`` and
``R = (c − S) / (2n²)`` (so ``F = c z + S u``)::

    ∂F/∂u = S I + (−σ S z + 2R u)(G u)ᵀ          ∂u/∂v = I − σ z (G z)ᵀ
    ∂F/∂z|_u = c I                               ∂u/∂z = −σ (⟨z, v⟩ I + z (G v)ᵀ)
    J_v = ∂F/∂u ∂u/∂v                            J_z = c I + ∂F/∂u ∂u/∂z

(Euclidean: ``F = z + v``, ``J_v = J_z = I``.) ``J_z`` is the derivative of the formula in every
ambient direction (the paper's ``J_z = cosh‖v‖ I`` keeps the first term only). geoopt is imported
lazily: without the ``graph`` extra, :func:`manifold` raises :class:`GraphExtraMissing`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import torch
from torch import Tensor

from snnarena.errors import ConfigurationError
from snnarena.extras import ExtraMissing, import_extra, install_hint

ManifoldName = Literal["lorentz", "sphere", "euclidean"]
MANIFOLDS: tuple[str, ...] = ("lorentz", "sphere", "euclidean")
#: Below this ``n`` the series of ``S`` and ``R`` replace the closed forms (no 0/0).
_SMALL = 1e-3
EXTRA_HINT = install_hint("graph")


#: The error of a missing ``graph`` extra (kept under this name for the msg plugin's users).
GraphExtraMissing = ExtraMissing


def load_geoopt() -> ModuleType:
    """The ``geoopt`` module, or :class:`GraphExtraMissing` naming the extra to install."""
    return import_extra("geoopt", extra="graph", needed_for="the msg model")


def geoopt_missing() -> str | None:
    """Why geoopt cannot be used (the message of :class:`GraphExtraMissing`), or ``None``."""
    try:
        load_geoopt()
    except GraphExtraMissing as err:
        return str(err)
    return None


class Manifold:
    """One of :data:`MANIFOLDS` in ambient coordinates: the layer map ``F(z, v) = Exp_z(P_z v)``
    (values from geoopt), ``Log_0``, the origin, and ``F``'s closed-form Jacobians."""

    def __init__(self, name: str) -> None:
        if name not in MANIFOLDS:
            raise ConfigurationError(f"unknown manifold {name!r}; choose one of {', '.join(MANIFOLDS)}")
        geoopt = load_geoopt()
        self.name = name
        self.sigma = {"lorentz": -1.0, "sphere": 1.0, "euclidean": 0.0}[name]
        self._geo: Any = {
            "lorentz": lambda: geoopt.Lorentz(k=1.0),
            "sphere": lambda: geoopt.Sphere(),
            "euclidean": lambda: geoopt.Euclidean(ndim=1),
        }[name]()

    def ambient(self, dim: int) -> int:
        """Ambient coordinates of a ``dim``-dimensional manifold (``dim + 1`` for the hyperboloid;
        the sphere ``S^{dim−1}`` uses ``dim``)."""
        return dim + 1 if self.name == "lorentz" else dim

    def origin(self, rows: int, dim: int, like: Tensor) -> Tensor:
        """The origin ``[rows, dim]`` (ambient ``dim``) in ``like``'s dtype and device."""
        o = like.new_zeros(rows, dim)
        if self.name != "euclidean":
            o[:, 0] = 1.0
        return o

    def inner(self, a: Tensor, b: Tensor) -> Tensor:
        """``⟨a, b⟩ = aᵀ G b`` over the last axis, kept ``[..., 1]``."""
        return (self.metric(a) * b).sum(-1, keepdim=True)

    def metric(self, a: Tensor) -> Tensor:
        """``G a``: the Lorentz form flips the sign of coordinate 0."""
        if self.name != "lorentz":
            return a
        return torch.cat([-a[..., :1], a[..., 1:]], -1)

    def move(self, z: Tensor, v: Tensor) -> Tensor:
        """``F(z, v) = Exp_z(P_z v) = c z + S u`` ``[N, d]`` with ``u`` = geoopt's ``proju`` and
        the coefficients of :meth:`_coefficients` (series near ``u = 0``), equal to geoopt's
        ``expmap`` values (tested) but differentiable at ``u = 0``: geoopt's ``Sphere.expmap``
        switches to a retraction there with ``torch.where``, whose unused branch ``sin(n)/n`` makes
        the gradient NaN (a node whose layer input is all zero; it failed BPTT training), and
        ``Lorentz.expmap`` clamps ``⟨u, u⟩ ≥ 1e-8``, which biases the gradient of small vectors."""
        if self.name == "euclidean":
            return z + v
        u = self._geo.proju(z, v)
        c, S, _ = self._coefficients(u)
        return c * z + S * u

    def geoopt_move(self, z: Tensor, v: Tensor) -> Tensor:
        """geoopt's own ``Exp_z(P_z v)`` (the reference :meth:`move` is tested against)."""
        if self.name == "euclidean":
            return self._geo.expmap(z, v)
        return self._geo.expmap(z, self._geo.proju(z, v))

    def log0(self, z: Tensor) -> Tensor:
        """``Log_0 z`` ``[N, d]``: the tangent vector at the origin pointing to ``z`` (geoopt)."""
        if self.name == "euclidean":
            return z
        if self.name == "lorentz":
            return self._geo.logmap0(z)
        return self._geo.logmap(self.origin(z.shape[0], z.shape[1], z), z)

    # -- closed-form derivatives of F ------------------------------------------------------------------

    def _coefficients(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c, S, R)`` ``[N, 1]`` of ``u = P_z v`` (see the module docstring)."""
        n2 = self.inner(u, u).clamp_min(0.0)
        n = n2.clamp_min(_SMALL * _SMALL).sqrt()  # the closed forms are only used above _SMALL
        if self.name == "sphere":
            c, sine = torch.cos(n), torch.sin(n)
            s_small, r_small = 1 - n2 / 6 + n2 * n2 / 120, -1 / 6 + n2 / 60
        else:
            c, sine = torch.cosh(n), torch.sinh(n)
            s_small, r_small = 1 + n2 / 6 + n2 * n2 / 120, 1 / 6 + n2 / 60
        small = n2 < _SMALL * _SMALL
        c = torch.where(small, 1 - self.sigma * n2 / 2 + n2 * n2 / 24, c)
        S = torch.where(small, s_small, sine / n)
        R = torch.where(small, r_small, (c - sine / n) / (2 * n2.clamp_min(_SMALL * _SMALL)))
        return c, S, R

    def jacobians(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(J_v, J_z)`` ``[N, d, d]`` of ``F`` at ``(z [N, d], v [N, d])`` (rows: outputs)."""
        n, d = z.shape
        eye = torch.eye(d, dtype=z.dtype, device=z.device).expand(n, d, d)
        if self.name == "euclidean":
            return eye.clone(), eye.clone()
        s = self.sigma
        u = v - s * self.inner(z, v) * z
        c, S, R = self._coefficients(u)
        dF_du = S[..., None] * eye + torch.einsum("ni,nj->nij", -s * S * z + 2 * R * u, self.metric(u))
        du_dv = eye - s * torch.einsum("ni,nj->nij", z, self.metric(z))
        du_dz = -s * (self.inner(z, v)[..., None] * eye + torch.einsum("ni,nj->nij", z, self.metric(v)))
        return dF_du @ du_dv, c[..., None] * eye + dF_du @ du_dz

    def vjp(self, z: Tensor, v: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """``(gᵀ J_v, gᵀ J_z)`` ``[N, d]`` for ``g = ∂L/∂F`` ``[N, d]``, without forming ``J``."""
        if self.name == "euclidean":
            return g, g
        s = self.sigma
        zv = self.inner(z, v)
        u = v - s * zv * z
        c, S, R = self._coefficients(u)
        a = (g * (-s * S * z + 2 * R * u)).sum(-1, keepdim=True)
        grad_u = S * g + a * self.metric(u)
        grad_uz = (grad_u * z).sum(-1, keepdim=True)
        grad_v = grad_u - s * grad_uz * self.metric(z)
        grad_z = c * g - s * (zv * grad_u + grad_uz * self.metric(v))
        return grad_v, grad_z


class ManifoldStep(torch.autograd.Function):
    """``F(z, v)`` forward (geoopt); backward through the closed-form Jacobians only:
    ``∂L/∂v = J_vᵀ ∂L/∂F``, ``∂L/∂z = J_zᵀ ∂L/∂F`` (Sun et al., 2024, "differentiation via the
    manifold"). Saves ``z`` and ``v`` ``[N, d]``: nothing per time step."""

    @staticmethod
    def forward(ctx: Any, manifold: Manifold, z: Tensor, v: Tensor) -> Tensor:
        ctx.manifold = manifold
        ctx.save_for_backward(z, v)
        return manifold.move(z, v)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, Tensor]:
        z, v = ctx.saved_tensors
        grad_v, grad_z = ctx.manifold.vjp(z, v, grad)
        return None, grad_z, grad_v
