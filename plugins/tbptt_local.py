"""``tbptt_local``: truncated BPTT with local training blocks (Guo, Fouda, Eltawil, Salama 2023).

Two truncations of the gradient path, one in time and one in depth:

* **time**: the ``T`` steps are cut into segments of ``K`` steps. Each segment starts from the
  previous segment's final state *detached* (not reset: the forward dynamics are BPTT's), so no
  error flows across a segment boundary;
* **depth**: the ``L`` stages are cut into blocks of ``Lb`` consecutive stages. Block ``b`` reads
  the output spikes of block ``b − 1`` *detached* and has its own objective: an auxiliary head
  ``o^b[t] = W_b · pool(S_b[t]) + c_b`` (a ``Linear`` on the block's output spikes; feature maps
  ``[C, H, W]`` are averaged over ``H, W`` first) with the cell's loss on those per-step logits.
  The last block uses the model's own readout, so its objective is the model's loss.

Per segment ``s`` (steps ``t_s .. t_s+k−1``) and block ``b`` the method back-propagates
``SequenceLoss.segment(o^b[t_s : t_s+k], y, T)`` (``per_step``: ``(1/T) Σ_t CE(o^b[t], y)``;
``rate``: ``(k/T) CE(mean_t o^b[t], y)``) right after running that block on that segment, so the
graph alive at any time is one block × one segment: saved memory ``O(K·Lb·B·N)`` (+ the head),
flat in ``T``. ``update="batch"``: gradients of all segments and blocks are summed into
``p.grad`` and the optimizer steps once per batch; ``update="segment"``: it steps after every
segment's backward (all blocks of the segment), Guo et al.'s update unlocking — ``ceil(T/K)``
optimizer steps per batch, and later segments run with the updated weights. The heads are the
method's own parameters (:meth:`prepare` wraps the model and the heads; ``extra_parameters``
counts them); the returned loss is the model's (last block).
With ``K >= T`` and one block (``block_size >= L``) this is BPTT exactly.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Preset, Update
from snnarena.model import SeqOutput, SpikingModel, StepOutput
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS


class AuxHead(nn.Module):
    """Per-step logits from a block's spikes ``[k, B, *features]`` → ``[k, B, C]``.

    Vectors ``[N]`` go straight into ``Linear(N, C)``; feature maps ``[C_f, H, W]`` are averaged
    over the spatial dimensions first (``Linear(C_f, C)``).
    """

    def __init__(self, features: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.spatial = len(features) > 1
        self.linear = nn.Linear(features[0] if self.spatial else math.prod(features), n_classes)

    def forward(self, spikes: Tensor) -> Tensor:
        k, batch = spikes.shape[:2]
        h = spikes.flatten(0, 1)
        h = h.flatten(2).mean(-1) if self.spatial else h.flatten(1)
        return self.linear(h).unflatten(0, (k, batch))


def block_bounds(n_stages: int, block_size: int) -> list[tuple[int, int]]:
    """Stage index ranges ``[lo, hi)`` of the blocks (the last one may be shorter)."""
    return [(lo, min(lo + block_size, n_stages)) for lo in range(0, n_stages, block_size)]


class LocalBlocksModel(nn.Module):
    """The model plus one auxiliary head per block but the last; shares the model's parameters.

    Behaves like the wrapped :class:`~snnarena.model.SpikingModel` for inference
    (``forward_seq``/``step``/``forward`` ignore the heads).
    """

    def __init__(self, model: SpikingModel, block_size: int) -> None:
        super().__init__()
        self.model = model
        self.blocks = block_bounds(len(model.stages), block_size)
        param = next(model.parameters())
        training = model.training
        model.eval()  # a shape probe must not update BatchNorm running statistics
        with torch.no_grad():
            x = torch.zeros(1, *model.info.input_shape, dtype=param.dtype, device=param.device)
            spikes = model.step(x, model.init_state()).spikes
        model.train(training)
        self.heads = nn.ModuleList(
            AuxHead(tuple(spikes[hi - 1].shape[1:]), model.info.n_classes) for _, hi in self.blocks[:-1]
        ).to(device=param.device, dtype=param.dtype)

    # the model's interface, for evaluation and metrics
    @property
    def stages(self) -> nn.ModuleList:
        return self.model.stages

    @property
    def readout(self) -> nn.Module:
        return self.model.readout

    @property
    def info(self) -> DataInfo:
        return self.model.info

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.model.name

    def init_state(self) -> list[Any]:
        return self.model.init_state()

    def step(self, x: Tensor, state: list[Any]) -> StepOutput:
        return self.model.step(x, state)

    def forward_seq(self, x: Tensor, state: list[Any] | None = None) -> SeqOutput:
        return self.model.forward_seq(x, state)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_seq(x).logits

    def has_batch_norm(self) -> bool:
        return self.model.has_batch_norm()

    def neuron_count(self) -> int:
        return self.model.neuron_count()


_PAPER = "Guo et al., Front. Neurosci. 2023 (arXiv 2201.07210); research notes"

#: ``tbptt_local@paper``: Guo et al.'s update unlocking; the paper's K, Lb, neuron and optimizer are
#: a sweep or unverified (methods.md §2 has no official code), so the suite's stay.
PAPER = Preset(
    doc="TBPTT + local learning as in Guo et al. 2023: an optimizer step after every segment (update "
    "unlocking) and the CE of each segment's rate. No official code: K, Lb (a swept design space), the "
    "neuron, surrogate and optimizer are the suite's.",
    params={"update": "segment"},
    loss="rate",
    sources={
        "params.update": f"{_PAPER} §2(b), §12: backprop within the segment, then update (update unlocking)",
        "loss": f"{_PAPER} §2(b) pseudocode: loss_b = CE(head_b(rate(h_b over seg)), y)",
    },
)


_GUO_SOURCE = "Guo et al., Front. Neurosci. 2023 (arXiv 2201.07210)"
_GUO_ALEXNET = Conditions(
    "AlexNet on CIFAR10-DVS, one GPU (the abstract's headline)",
    datasets=("cifar10_dvs",),
    models=("alexnet",),  # no such plugin yet
    min_parameters=2_000_000,
    device="cuda",
)
#: The paper's headline claims, checked by ``snnarena claims`` (:mod:`snnarena.claims`).
PAPER_CLAIMS = (
    Claim(
        "gpu-memory-vs-bptt",
        "Uses 89.94 % less GPU memory than end-to-end BPTT (peak device memory at most 0.1006 x BPTT's).",
        f"{_GUO_SOURCE}, abstract (AlexNet on CIFAR10-DVS: +7.26 % accuracy, -89.94 % GPU memory, -10.79 % memory "
        "access, -99.64 % MACs)",
        "abstract of arXiv v1, confirmed (methods.md section 2 had it from a summary)",
        Check("ratio", "peak_device_bytes", "<=", 0.1006, reference="bptt"),
        _GUO_ALEXNET,
    ),
    Claim(
        "activation-memory-vs-bptt",
        "Saves at most 0.1006 x BPTT's bytes for the backward pass (the CPU stand-in of the GPU-memory headline).",
        f"{_GUO_SOURCE}, abstract (-89.94 % GPU memory)",
        "abstract of arXiv v1, confirmed; measured here as saved-for-backward bytes",
        Check("ratio", "peak_activation_bytes", "<=", 0.1006, reference="bptt"),
        _GUO_ALEXNET,
    ),
    Claim(
        "accuracy-vs-bptt",
        "Is more accurate than end-to-end BPTT on event-based data (CIFAR10-DVS: +7.26 points).",
        f"{_GUO_SOURCE}, abstract",
        "abstract of arXiv v1, confirmed",
        Check("difference", "test_accuracy", ">", 0.0, reference="bptt"),
        _GUO_ALEXNET,
    ),
)


class TBPTTLocal(GradientMethod[LocalBlocksModel | SpikingModel]):
    """Truncated BPTT (K steps) with local training blocks of Lb stages and auxiliary heads."""

    name = "tbptt_local"
    CLAIMS = PAPER_CLAIMS
    memory_class = "O(K)"
    tasks = frozenset(TASK_KINDS)  # passes start to the loss: per-step targets split exactly
    PRESETS = MappingProxyType({"paper": PAPER})
    PARAMS = (
        Param("K", "int", 8, "truncation length in time steps", low=1),
        Param("block_size", "int", 1, "stages per local training block (Lb)", low=1),
        Param(
            "update",
            "str",
            "batch",
            "optimizer step once per batch or after every segment (update unlocking, Guo et al.)",
            choices=("batch", "segment"),
        ),
    )

    @property
    def updates_within_batch(self) -> bool:
        return self.params["update"] == "segment"

    def prepare(self, model: SpikingModel) -> LocalBlocksModel:
        return LocalBlocksModel(model, self.params["block_size"])

    def _unwrap(
        self, model: LocalBlocksModel | SpikingModel
    ) -> tuple[SpikingModel, list[tuple[int, int]], nn.ModuleList]:
        if isinstance(model, LocalBlocksModel):
            if model.blocks != block_bounds(len(model.stages), self.params["block_size"]):
                raise ValueError(
                    f"block_size: the module was prepared with blocks {model.blocks}, this method "
                    f"uses block_size={self.params['block_size']}"
                )
            return model.model, model.blocks, model.heads
        blocks = block_bounds(len(model.stages), self.params["block_size"])
        if len(blocks) > 1:
            raise ValueError("tbptt_local needs the module returned by prepare(model), which holds the auxiliary heads")
        return model, blocks, nn.ModuleList()

    def unroll(
        self,
        model: LocalBlocksModel | SpikingModel,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        clock: PhaseClock,
        update: Update,
    ) -> float:
        """Every segment through every block, each block's backward at once; ``update()`` after
        each segment's last block."""
        net, blocks, heads = self._unwrap(model)
        K, T = self.params["K"], x.shape[0]
        state = net.init_state()
        total = 0.0
        for start in range(0, T, K):
            h = x[start : start + K]
            for b, (lo, hi) in enumerate(blocks):
                last = b == len(blocks) - 1
                with clock.phase("forward"):
                    h = h.detach()
                    for l in range(lo, hi):
                        h, state[l] = net.stages[l].forward_seq(h, state[l])
                    if last:
                        logits = net.readout(h.flatten(0, 1)).unflatten(0, h.shape[:2])
                    else:
                        logits = heads[b](h)
                    value = loss.segment(logits, y, T, start)
                with clock.phase("backward"):
                    value.backward()
                for l in range(lo, hi):
                    state[l] = detach_state(state[l])
                if last:
                    total += float(value.detach())
            update()
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(TBPTTLocal)
