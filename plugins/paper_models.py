"""The papers' networks: ``vgg11_ws`` (OTTT), ``vgg_snn`` (the VGG-SNN of DVS papers, rate-BP's
``vggsnn_dvs``), ``vgg11_bn`` (SLTT's DVS network) and ``preact_resnet18`` (SLTT's CIFAR network).

Every network takes image-shaped inputs ``x`` ``[T, B, C, H, W]`` (static images repeated or
encoded over ``T``, or event frames), is built from :class:`~snnarena.model.Stage`\\ s of the
suite's neuron, and is sized by parameters: ``width`` multiplies every paper channel count
(``max(1, round(c · width))``), the input size and ``n_classes`` come from the data, and a 2×2
pooling is skipped once the feature map is smaller than 2×2, so tests build tiny versions.

Conventions shared by all of them:

* **BatchNorm** normalises each time step's batch, in ``step`` and ``forward_seq`` alike
  (:class:`StepwiseStage`, the single-step mode of SLTT's code); code that runs BatchNorm over the
  ``T·B`` samples of a sequence (SpikingJelly's multi-step mode) differs in training mode.
* **Scaled weight standardisation** (:class:`ScaledWSConv2d`) replaces BatchNorm where a method
  cannot take it (OTTT): it is affine in its input, so trace-based methods train it.
* Dropout and augmentation are not part of the models (dropout would need one mask per sequence).

``vgg11_ws``, ``vgg_snn`` and ``vgg11_bn`` are chains of stages (``family = "feedforward"``):
every built-in method that trains feedforward models trains them (``ottt`` and ``ratebp`` only
without BatchNorm: ``vgg11_ws``, or ``norm = "none"`` with ``weight_standardization``). ``preact_resnet18`` has skip
connections across stages, so it overrides ``step``/``forward_seq`` and is of ``family =
"residual"``: methods that drive ``model.step``/``forward_seq`` and the state (``bptt``, ``tbptt``,
``checkpointed_bptt``, ``sltt``) can train it, methods that walk ``model.stages`` as a chain
(``ottt``, ``ratebp``, ``tbptt_local``) cannot and skip it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import NeuronFactory, SeqOutput, SpikingModel, Stage, StepOutput
from snnarena.neuron import Neuron
from snnarena.params import Param
from snnarena.registry import Register

#: The family of models whose stages are wired with skip connections (not a chain of stages).
RESIDUAL = "residual"
#: ``Scale(2.74)`` after every neuron of OTTT's VGG (pkuxmq/OTTT-SNN models/spiking_vgg.py).
OTTT_SCALE = 2.74
#: A 2×2 average pooling in a VGG configuration.
POOL = "P"

_WIDTH = Param(
    "width", "float", 1.0, "multiplier of the paper's channel counts (each max(1, round(c · width)))", low=1e-3
)


class ScaledWSConv2d(nn.Conv2d):
    """A convolution with scaled weight standardisation (OTTT's ``ScaledWSConv2d``, after Brock et
    al.'s normaliser-free networks), per output channel ``j`` with fan-in ``n = C_in/groups · k_h · k_w``::

        Ŵ_j = g_j (W_j − mean(W_j)) / sqrt(n · var(W_j) + ε)        y = conv(a · x, Ŵ) + b

    with the unbiased variance (``torch.var``, as the official code), a learnable gain ``g``
    ``[C_out, 1, 1, 1]`` starting at 1 and a constant input scale ``a`` (``input_scale``: OTTT's
    ``Scale(2.74)`` on the spikes this layer receives, folded into the weight since
    ``conv(a·x, Ŵ) = conv(x, a·Ŵ)``). Affine in ``x`` for fixed parameters.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        eps: float = 1e-4,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.eps = eps
        self.input_scale = input_scale

    def standardized_weight(self) -> Tensor:
        """``Ŵ`` ``[C_out, C_in/groups, k_h, k_w]`` (without the input scale)."""
        w = self.weight
        fan_in = math.prod(w.shape[1:])
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True)
        return self.gain * (w - mean) / torch.sqrt(var * fan_in + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.input_scale * self.standardized_weight()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_scale={self.input_scale}"


class InputScaledLinear(nn.Linear):
    """``y = W (a · x) + b``: a linear layer whose input is multiplied by the constant ``a``
    (OTTT's ``Scale(2.74)`` before its classifier), computed as ``(a W) x + b``."""

    def __init__(self, in_features: int, out_features: int, input_scale: float, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.input_scale = input_scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.input_scale * self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_scale={self.input_scale}"


class StepwiseStage(Stage):
    """A :class:`~snnarena.model.Stage` whose synapse also runs one time step at a time in
    ``forward_seq``: ``x`` ``[T, B, ...]`` → ``synapse(x[t])`` for each ``t``, then the neuron over
    the sequence. A synapse with BatchNorm thus normalises each step's batch in both modes, so
    ``forward_seq`` gives exactly what ``T`` calls of ``step`` give."""

    def forward_seq(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        current = torch.stack([self.synapse(x_t) for x_t in x.unbind(0)])
        return self.neuron.forward_seq(current, state)


def make_stage(synapse: nn.Module, neuron: Neuron) -> Stage:
    """A :class:`StepwiseStage` for a synapse holding BatchNorm, a plain :class:`Stage` otherwise."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in synapse.modules())
    return StepwiseStage(synapse, neuron) if has_bn else Stage(synapse, neuron)


def scaled_channels(channels: int, width: float) -> int:
    """``max(1, round(channels · width))``."""
    return max(1, round(channels * width))


def _image_skip(name: str, info: DataInfo) -> str | None:
    if len(info.input_shape) != 3:
        return (
            f"{name} needs image inputs [C, H, W]; the dataset gives {list(info.input_shape)}"
            " (datasets with a 'flatten' parameter can set it to false)"
        )
    return None


class _SpikingVGG(SpikingModel):
    """A chain of 3×3 convolution stages (``CONFIG``: channel counts, and :data:`POOL` for a 2×2
    average pooling that goes into the next stage's synapse) and a memoryless readout.

    Conv stage ``l``: ``I_l = N_l(Conv3x3_l(Pool?(S_{l−1})))`` with ``N_l`` the stage's
    normalisation (BatchNorm per step, or none), then the suite's neuron. Subclasses choose the
    convolution (:meth:`conv`) and the readout (:meth:`make_readout`, which receives the pooling
    left after the last convolution).
    """

    CONFIG: ClassVar[tuple[int | str, ...]] = ()

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        return _image_skip(cls.name, info)

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        c, h, w = info.input_shape
        pending: list[nn.Module] = []
        for item in self.CONFIG:
            if item == POOL:
                if min(h, w) >= 2:
                    pending.append(nn.AvgPool2d(2))
                    h, w = h // 2, w // 2
                continue
            out = scaled_channels(int(item), self.params["width"])
            layers = [*pending, self.conv(c, out, first=not self.stages), *self.norm(out)]
            self.stages.append(make_stage(nn.Sequential(*layers), make_neuron()))
            pending, c = [], out
        self.readout = self.make_readout(pending, c, h, w, info.n_classes)

    def conv(self, c_in: int, c_out: int, first: bool) -> nn.Conv2d:
        raise NotImplementedError

    def norm(self, channels: int) -> list[nn.Module]:
        """The normalisation after a convolution: ``[BatchNorm2d]`` for ``norm = "batch"``, else none."""
        return [nn.BatchNorm2d(channels)] if self.params.get("norm") == "batch" else []

    def make_readout(self, pending: list[nn.Module], c: int, h: int, w: int, n_classes: int) -> nn.Module:
        raise NotImplementedError


class VGG11WS(_SpikingVGG):
    """OTTT's VGG-11 with scaled weight standardisation (``online_spiking_vgg11_ws``, Xiao et al.
    2022; pkuxmq/OTTT-SNN models/spiking_vgg.py with ``fc_hw = 1``).

    ``64C3-128C3-P2-256C3-256C3-P2-512C3-512C3-P2-512C3-512C3`` (``C3``: a :class:`ScaledWSConv2d`
    3×3 stage, ``P2``: 2×2 average pooling), then the light classifier
    ``o[t] = W · AvgPool_{H,W}(a · S_L[t]) + b``. ``Scale(a = 2.74)`` after every neuron is folded
    into the next layer (``input_scale``; ``scale = 1`` drops it). Init as the official code:
    Kaiming-normal (fan-out) conv weights, zero biases, classifier ``N(0, 0.01²)``. No BatchNorm,
    every synapse affine: ``ottt`` and ``ratebp`` train it.
    """

    name = "vgg11_ws"
    CONFIG = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512)
    PARAMS = (
        _WIDTH,
        Param(
            "scale",
            "float",
            OTTT_SCALE,
            "constant gain on every neuron's spikes (OTTT's Scale(2.74)), folded into the next synapse",
            low=1e-6,
        ),
        Param(
            "weight_standardization",
            "bool",
            True,
            "always true: the network's convolutions are weight-standardised (accepts ottt@paper's setting)",
            choices=(True,),
        ),
    )

    def conv(self, c_in: int, c_out: int, first: bool) -> nn.Conv2d:
        conv = ScaledWSConv2d(c_in, c_out, 3, padding=1, input_scale=1.0 if first else self.params["scale"])
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return conv

    def make_readout(self, pending: list[nn.Module], c: int, h: int, w: int, n_classes: int) -> nn.Module:
        linear = InputScaledLinear(c, n_classes, self.params["scale"])
        nn.init.normal_(linear.weight, 0.0, 0.01)
        nn.init.zeros_(linear.bias)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


_NORM = Param(
    "norm",
    "str",
    "batch",
    "after each convolution: batch (BatchNorm per time step) or none (for ottt/ratebp, with weight_standardization)",
    choices=("batch", "none"),
)
_WS = Param(
    "weight_standardization",
    "bool",
    False,
    "scaled weight standardisation of the convolutions (ScaledWSConv2d; ottt@paper sets it)",
)


class _NormVGG(_SpikingVGG):
    """A VGG whose convolutions are plain 3×3 (with bias) or, with ``weight_standardization``,
    :class:`ScaledWSConv2d`."""

    def conv(self, c_in: int, c_out: int, first: bool) -> nn.Conv2d:
        if self.params["weight_standardization"]:
            return ScaledWSConv2d(c_in, c_out, 3, padding=1)
        return nn.Conv2d(c_in, c_out, 3, padding=1)


class VGGSNN(_NormVGG):
    """The VGG-SNN of DVS papers (TET; rate-BP's ``vggsnn_dvs``, Tab-ct/rate-based-backpropagation
    model/vgg.py), for event frames ``[2, 48, 48]`` (CIFAR10-DVS) and other image inputs.

    ``64C3-128C3-P2-256C3-256C3-P2-512C3-512C3-P2-512C3-512C3-P2`` (``C3``: conv 3×3, weight-standardised
    with ``weight_standardization`` → BatchNorm (``norm``) → neuron), then ``o[t] = W Flatten(S_L[t]) + b``
    (``4608 = 512·3·3`` inputs at 48×48).
    Torch's default init (the official code draws ``N(0, 0.5²)``).
    """

    name = "vgg_snn"
    CONFIG = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)
    PARAMS = (_WIDTH, _NORM, _WS)

    def make_readout(self, pending: list[nn.Module], c: int, h: int, w: int, n_classes: int) -> nn.Module:
        return nn.Sequential(*pending, nn.Flatten(), nn.Linear(c * h * w, n_classes))


class VGG11BN(_NormVGG):
    """SLTT's VGG-11 for DVS data (``spiking_vgg11_bn``, qymeng94/SLTT models/spiking_vgg_bn.py).

    ``64C3-P2-128C3-P2-256C3-256C3-P2-512C3-512C3-P2-512C3-512C3-P2`` (``C3``: conv 3×3 → BatchNorm
    (``norm``) → neuron), then ``o[t] = W Flatten(AdaptiveAvgPool_{7×7}(S_L[t])) + b`` as the official
    classifier. Init as the official code: Kaiming-normal (fan-out) conv weights, zero biases,
    classifier ``N(0, 0.01²)``.
    """

    name = "vgg11_bn"
    CONFIG = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)
    PARAMS = (_WIDTH, _NORM, _WS)

    def conv(self, c_in: int, c_out: int, first: bool) -> nn.Conv2d:
        conv = super().conv(c_in, c_out, first)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return conv

    def make_readout(self, pending: list[nn.Module], c: int, h: int, w: int, n_classes: int) -> nn.Module:
        linear = nn.Linear(c * 7 * 7, n_classes)
        nn.init.normal_(linear.weight, 0.0, 0.01)
        nn.init.zeros_(linear.bias)
        return nn.Sequential(*pending, nn.AdaptiveAvgPool2d(7), nn.Flatten(), linear)


class ResidualMerge(nn.Module):
    """The end of a pre-activation block: ``conv2(S_2) + shortcut(S_1)`` (the shortcut a 1×1
    convolution where the shape changes, the identity otherwise), per sample."""

    def __init__(self, conv2: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.conv2 = conv2
        self.shortcut = shortcut

    def forward(self, s2: Tensor, s1: Tensor) -> Tensor:
        out: Tensor = self.conv2(s2) + self.shortcut(s1)
        return out


#: How a stage runs: ``Stage.step`` (one step) or ``Stage.forward_seq`` (a sequence).
_StageRun = Callable[[Stage, Tensor, Any], tuple[Tensor, Any]]
#: How a per-sample module runs on what the stages give (``[B, ...]`` or ``[T, B, ...]``).
_Apply = Callable[[nn.Module, Sequence[Tensor]], Tensor]


def _apply_step(module: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    out: Tensor = module(*inputs)
    return out


def _apply_seq(module: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    """``module`` on all ``T·B`` samples of ``[T, B, ...]`` inputs at once, reshaped back."""
    steps, batch = inputs[0].shape[:2]
    out: Tensor = module(*(x.flatten(0, 1) for x in inputs))
    return out.unflatten(0, (steps, batch))


class PreActResNet18(SpikingModel):
    """SLTT's spiking PreAct-ResNet-18 (qymeng94/SLTT models/spiking_resnet.py, after He et al.'s
    pre-activation ResNet).

    With ``S_1^b, S_2^b`` the two neuron layers of block ``b`` and ``X^b`` its input (``X^0 = Conv3x3(x)``,
    64 channels, no bias)::

        S_1^b = N(BN_1(X^b))        S_2^b = N(BN_2(Conv3x3_s(S_1^b)))
        X^{b+1} = Conv3x3(S_2^b) + shortcut(S_1^b)          (the shortcut reads the spikes, as the official code)

    ``blocks[i]`` blocks of ``64·2^i · width`` channels per group, stride 2 at the first block of every
    group but the first; the shortcut is a 1×1 convolution where the shape changes. Then
    ``S = N(BN(X))`` and ``o[t] = W AvgPool_{H,W}(S[t]) + b`` (``AvgPool2d(4)`` at 32×32 in the
    official code). ``blocks = [3, 4, 6, 3]`` is PreAct-ResNet-34. Init as the official code.
    ``norm = "none"`` drops the BatchNorms and ``weight_standardization`` makes every convolution a
    :class:`ScaledWSConv2d` (together: a normaliser-free variant, after the NF-ResNets OTTT trains on ImageNet).

    Stages, in order: ``[N_1^0, N_2^0, N_1^1, ..., N_2^{B−1}, N_final]``; the stem convolution is part of the
    first stage's synapse, and ``merges[b]`` holds ``Conv3x3`` and the shortcut of block ``b``. Because
    of the skip connections ``step``/``forward_seq`` are overridden and ``family = "residual"``.
    """

    name = "preact_resnet18"
    family = RESIDUAL
    PARAMS = (
        _WIDTH,
        Param(
            "blocks",
            "int_list",
            (2, 2, 2, 2),
            "residual blocks per group (group i has 64·2^i·width channels); [3, 4, 6, 3] is ResNet-34",
            low=1,
            min_len=1,
        ),
        _NORM,
        _WS,
    )

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        return _image_skip(cls.name, info)

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
        """A convolution (``ScaledWSConv2d`` with ``weight_standardization``)."""
        layer = ScaledWSConv2d if self.params["weight_standardization"] else nn.Conv2d
        return layer(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)

    def norm(self, channels: int) -> nn.Module:
        """``BatchNorm2d`` (``norm = "batch"``) or the identity."""
        return nn.BatchNorm2d(channels) if self.params["norm"] == "batch" else nn.Identity()

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        c_in = info.input_shape[0]
        c = scaled_channels(64, self.params["width"])
        stem = self.conv(c_in, c, 3, bias=False)
        self.merges = nn.ModuleList()
        for group, count in enumerate(self.params["blocks"]):
            out = scaled_channels(64 * 2**group, self.params["width"])
            for index in range(count):
                stride = 2 if group > 0 and index == 0 else 1
                pre = self.norm(c)
                self.stages.append(make_stage(pre if self.merges else nn.Sequential(stem, pre), make_neuron()))
                conv1 = self.conv(c, out, 3, stride=stride)
                self.stages.append(make_stage(nn.Sequential(conv1, self.norm(out)), make_neuron()))
                shortcut = self.conv(c, out, 1, stride=stride) if stride != 1 or c != out else nn.Identity()
                self.merges.append(ResidualMerge(self.conv(out, out, 3), shortcut))
                c = out
        self.stages.append(make_stage(self.norm(c), make_neuron()))
        self.readout = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, info.n_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def _propagate(
        self, x: Tensor, state: list[Any], run: _StageRun, apply: _Apply
    ) -> tuple[Tensor, list[Any], list[Tensor]]:
        """The residual wiring, shared by ``step`` (one step) and ``forward_seq`` (a sequence):
        the last stage's spikes, the new state and every stage's spikes."""
        spikes: list[Tensor] = []
        new_state: list[Any] = []

        def stage(l: int, h: Tensor) -> Tensor:
            s, st = run(self.stages[l], h, state[l])
            spikes.append(s)
            new_state.append(st)
            return s

        h = x
        for b, merge in enumerate(self.merges):
            s1 = stage(2 * b, h)
            s2 = stage(2 * b + 1, s1)
            h = apply(merge, (s2, s1))
        return stage(len(self.stages) - 1, h), new_state, spikes

    def step(self, x: Tensor, state: list[Any]) -> StepOutput:
        """``x`` ``[B, C, H, W]`` → logits ``[B, n_classes]``, one step through the blocks."""
        s, new_state, spikes = self._propagate(x, state, lambda st, h, s0: st.step(h, s0), _apply_step)
        return StepOutput(self.readout(s), new_state, spikes)

    def forward_seq(self, x: Tensor, state: list[Any] | None = None) -> SeqOutput:
        """``x`` ``[T, B, C, H, W]`` → logits ``[T, B, n_classes]``, stage by stage over the sequence."""
        state = self.init_state() if state is None else state
        s, new_state, spikes = self._propagate(x, state, lambda st, h, s0: st.forward_seq(h, s0), _apply_seq)
        return SeqOutput(_apply_seq(self.readout, (s,)), new_state, spikes)


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(VGG11WS)
    register(VGGSNN)
    register(VGG11BN)
    register(PreActResNet18)
