# docs/examples/metric_plugin.py
"""``calibration``: how well the trained model's confidence matches its accuracy on the test set.

The prediction is the argmax of the time-averaged logits (as for ``test_accuracy``); its
confidence is ``c = max_k softmax((1/T) Σ_t o[t])_k``. With the test samples split into
``bins`` equal-width confidence bins ``B_b``, the expected calibration error is

    ECE = Σ_b (|B_b| / N) |accuracy(B_b) − mean confidence(B_b)|

Columns: ``ece`` (lower is better) and ``mean_confidence`` (neither better nor worse). It reads
class predictions of whole sequences, so it measures sequence classification only (``tasks``):
a suite that pairs it with another task is refused.
"""

from __future__ import annotations

import torch

import snnarena
from snnarena.columns import Column
from snnarena.metric import CellContext, Metric
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class Calibration(Metric):
    """Expected calibration error and mean confidence of the predictions on the test set."""

    name = "calibration"
    PARAMS = (Param("bins", "int", 10, "equal-width confidence bins", low=1),)
    tasks = frozenset({"classification"})
    columns = (
        Column("ece", False, "", "ratio", "expected calibration error of the test predictions"),
        Column("mean_confidence", None, "", "ratio", "mean top-class probability on the test set"),
    )

    def compute(self, ctx: CellContext) -> dict[str, float]:
        confidences, correct = [], []
        was_training = ctx.model.training
        ctx.model.eval()
        try:
            with torch.no_grad():
                for x, y in ctx.data.test_batches(256):
                    logits = ctx.model.forward_seq(x.to(ctx.device)).logits  # [T, B, C]
                    confidence, prediction = logits.mean(0).softmax(-1).max(-1)
                    confidences.append(confidence.cpu())
                    correct.append((prediction.cpu() == y).double())
        finally:
            ctx.model.train(was_training)
        if not confidences:
            raise ValueError("the test split is empty")  # recorded in metric_errors; the columns stay NaN
        conf, hit = torch.cat(confidences).double(), torch.cat(correct)
        bins = (conf * self.params["bins"]).long().clamp(max=self.params["bins"] - 1)  # [N] bin index
        ece = 0.0
        for b in bins.unique():
            members = bins == b
            ece += float(members.double().mean() * (hit[members].mean() - conf[members].mean()).abs())
        return {"ece": ece, "mean_confidence": float(conf.mean())}


@snnarena.hookimpl
def register_metrics(register: Register) -> None:
    register(Calibration)
