"""Every surrogate's backward equals the derivative of its smooth primitive, on a grid."""

from __future__ import annotations

import pytest
import torch

from snnarena.factory import build_surrogate

GRID = torch.linspace(-3, 3, 2001, dtype=torch.float64)
NAMES = ["sigmoid", "atan", "fast_sigmoid", "triangle", "rectangle", "bellec"]


@pytest.mark.parametrize("name", NAMES)
def test_backward_equals_derivative_of_primitive(host, name):
    surrogate = build_surrogate(host, name)
    x = GRID.clone().requires_grad_(True)
    surrogate(x).sum().backward()
    backward = x.grad

    p = GRID.clone().requires_grad_(True)
    surrogate.primitive(p).sum().backward()
    analytic = p.grad
    # the rectangle's primitive has kinks at ±a/2, where autograd picks one side
    mask = ~torch.isclose(GRID.abs(), torch.tensor(0.5, dtype=torch.float64)) if name == "rectangle" else slice(None)
    torch.testing.assert_close(backward[mask], analytic[mask], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_heaviside_with_spike_at_zero(host, name):
    surrogate = build_surrogate(host, name)
    x = torch.tensor([-1.0, -1e-9, 0.0, 1e-9, 2.0])
    assert surrogate(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", NAMES)
def test_no_nan_far_from_threshold(host, name):
    surrogate = build_surrogate(host, name)
    x = torch.linspace(-100, 100, 1001, requires_grad=True)
    surrogate(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad >= 0).all()


@pytest.mark.parametrize(
    "name, params, peak",
    [
        ("sigmoid", {"alpha": 4.0}, 1.0),
        ("atan", {"alpha": 2.0}, 1.0),
        ("fast_sigmoid", {}, 1.0),
        ("bellec", {"gamma": 0.3, "width": 0.5}, 0.6),
        ("triangle", {"alpha": 2.0}, 2.0),
        ("rectangle", {"width": 0.5}, 2.0),
    ],
)
def test_peak_of_derivative_matches_documented_value(host, name, params, peak):
    surrogate = build_surrogate(host, name, params)
    assert float(surrogate.derivative(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(peak)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_leaves_its_input_alone(host, name):
    """Derivatives work in place on their own buffers (the fused backward calls them per block)."""
    surrogate = host.get("surrogate", name).obj()
    x = torch.linspace(-2, 2, 101, dtype=torch.float64)
    before = x.clone()
    first = surrogate.derivative(x)
    assert torch.equal(x, before) and torch.equal(surrogate.derivative(x), first)
    assert first.data_ptr() != x.data_ptr()
