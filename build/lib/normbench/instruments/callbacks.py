"""Instruments as Lightning callbacks (enabled from `conf/callbacks/`), logged to every configured logger.

- ``BatchStatFluctuation``: distance of each batch's mean/variance from the running ones (PowerNorm §3).
- ``TrainEvalGap``: validation metrics with running statistics (eval mode) and with batch statistics.
- ``BatchPartnerDependence``: how much an example's output moves when its batch mates change.
- ``CausalLeakProbe``: in causal models, how much the past moves when a future token changes.
- ``GradNormMonitor`` and ``NonFiniteGuard``: gradient norms per layer (and the largest total), and a stop
  with one line naming the step and the layer when the loss or a gradient stops being finite.
- ``ConvergenceMonitor``: training steps until the validation accuracy first reaches a target.
- ``StepTimer``: the median wall time of a training step (results.json ``train_step_s``).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from normbench.errors import ConfigError, NonFiniteError
from normbench.instruments import metrics as keys
from normbench.instruments.probes import batch_statistics_mode, causal_leak, first_non_finite_module, partner_dependence
from normbench.norms import FluctuationMeter, batch_stat_norms


def _val_loader(trainer: L.Trainer):
    loaders = trainer.val_dataloaders
    return loaders[0] if isinstance(loaders, list | tuple) else loaders


def _val_loader_as_trained(trainer: L.Trainer):
    """The validation data batched as training is (``data.eval_batch_size`` may batch the validation loop
    otherwise): batch statistics measured on it are those training saw."""
    datamodule = trainer.datamodule
    if hasattr(datamodule, "batch_statistics_loader"):
        return datamodule.batch_statistics_loader("val")
    return _val_loader(trainer)


class Instrument(Callback):
    """A callback whose logged values are also kept as a time series (``series[name] = [[step, value], ...]``),
    so ``results.json`` carries how an instrument moved over training, not only its last value; the series
    travel in checkpoints, so a resumed run keeps the part before the kill."""

    #: the keys it logs (normbench.instruments.metrics), which the run keeps and the report reads
    declared: ClassVar[keys.Declared]

    def __init__(self) -> None:
        self.series: dict[str, list[list[float]]] = {}

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, values: dict[str, Any], **kwargs: Any) -> None:
        undeclared = [name for name in values if not self.declared.declares(name)]
        if undeclared:  # a programming error: the run would drop the values and the report never see them
            raise RuntimeError(
                f"{type(self).__name__} logs {undeclared}, which normbench.instruments.metrics does not declare "
                f"for {self.declared.config}"
            )
        pl_module.log_dict(values, **kwargs)
        for name, value in values.items():
            points = self.series.setdefault(name, [])
            if points and points[-1][0] == trainer.global_step:  # measured again at the same step (final validate)
                points.pop()
            points.append([trainer.global_step, float(value)])

    def state_dict(self) -> dict[str, Any]:
        return {"series": self.series}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.series = state_dict.get("series", {})


def _pad_id(pl_module: L.LightningModule) -> int:
    return int(getattr(pl_module.encoder, "pad_id", 0))


class BatchStatFluctuation(Instrument):
    """Every ``every_n_steps`` training steps, log per norm layer the RMS distance of the batch mean and
    variance from the running ones (``stats/<layer>/mean_dist``, ``.../var_dist``) and their layer
    average (``stats/mean_dist``, ``stats/var_dist``). Silent for norms without batch statistics."""

    declared = keys.BATCH_STAT_FLUCTUATION

    def __init__(self, every_n_steps: int = 10) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._meters: dict[str, FluctuationMeter] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        if trainer.global_step % self.every_n_steps == 0:
            for name, norm in batch_stat_norms(pl_module):
                norm.fluctuation = self._meters.setdefault(name, FluctuationMeter())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        if not self._meters:
            return
        metrics: dict[str, float] = {}
        per_kind: dict[str, list[float]] = {}
        for name, norm in batch_stat_norms(pl_module):
            norm.fluctuation = None
            for kind, value in self._meters.get(name, FluctuationMeter()).result().items():
                metrics[f"stats/{name}/{kind}"] = value
                per_kind.setdefault(kind, []).append(value)
        metrics.update({f"stats/{kind}": sum(v) / len(v) for kind, v in per_kind.items()})
        self._meters = {}
        if metrics:
            self._log(trainer, pl_module, metrics, on_step=True, on_epoch=False, batch_size=len(batch[-1]))


class TrainEvalGap(Instrument):
    """After each validation epoch, evaluate again with batch statistics (train-mode norms, no update
    of running statistics, no dropout) and log ``val/acc_batch_stats``, ``val/loss_batch_stats`` and
    ``val/train_eval_gap`` (= acc with batch statistics - acc with running statistics) beside
    ``val/acc``. For norms without batch statistics the two passes agree and the gap is 0.

    A language model (``bits_name``: bpc or bpt) also logs ``val/<bits>_batch_stats`` and
    ``val/<bits>_train_eval_gap`` (bits with batch statistics - bits with running ones): in a causal model the
    batch's statistics carry the future tokens, so a negative gap is what the leak buys in training and loses
    at generation."""

    declared = keys.TRAIN_EVAL_GAP

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # both passes skip a last batch of one sequence (it has no batch statistics): the same examples
        loader = _val_loader_as_trained(trainer)
        eval_mode = pl_module.evaluate(loader, min_batch=2)
        with batch_statistics_mode(pl_module):
            batch_mode = pl_module.evaluate(loader, min_batch=2)
        metrics = {
            "val/acc_batch_stats": batch_mode["acc"],
            keys.BATCH_STATS_LOSS_KEY: batch_mode["loss"],
            keys.TRAIN_EVAL_GAP_KEY: batch_mode["acc"] - eval_mode["acc"],
        }
        bits = getattr(pl_module, "bits_name", None)
        if bits:
            metrics[f"val/{bits}_batch_stats"] = batch_mode["loss"] / math.log(2)
            metrics[f"val/{bits}_train_eval_gap"] = (batch_mode["loss"] - eval_mode["loss"]) / math.log(2)
        self._log(
            trainer,
            pl_module,
            metrics,
            sync_dist=True,  # under DDP each process evaluated its shard of the validation set: average them
        )


class BatchPartnerDependence(Instrument):
    """After each validation epoch: a fixed probe of ``probe_size`` validation examples is run with
    ``partner_sets`` different sets of training examples as batch mates (batch-statistics mode); logs
    ``probe/partner_dependence``, the mean standard deviation of the probe's logits across those sets."""

    declared = keys.PARTNER_DEPENDENCE

    def __init__(self, probe_size: int = 8, partner_sets: int = 4, partners: int = 24, seed: int = 0) -> None:
        super().__init__()
        self.probe_size, self.partner_sets, self.partners, self.seed = probe_size, partner_sets, partners, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # outside fit (trainer.validate) the trainer holds no train loader: ask the datamodule
        train = trainer.train_dataloader or trainer.datamodule.train_dataloader()
        value = self.measure(pl_module, _val_loader(trainer), train)
        self._log(trainer, pl_module, {"probe/partner_dependence": value})

    def measure(self, pl_module: L.LightningModule, val, train) -> float:
        """The probe on the given validation and training loaders (also what ``instruments.scorecard`` runs)."""
        generator = torch.Generator().manual_seed(self.seed)
        probe = val.collate_fn([val.dataset[i] for i in range(min(self.probe_size, len(val.dataset)))])
        sets = []
        for _ in range(self.partner_sets):
            picks = torch.randperm(len(train.dataset), generator=generator)[: self.partners].tolist()
            sets.append(train.collate_fn([train.dataset[i] for i in picks])[:2])
        device = pl_module.device
        probe_batch = (probe[0].to(device), probe[1].to(device))
        sets = [(tokens.to(device), mask.to(device)) for tokens, mask in sets]
        with batch_statistics_mode(pl_module):
            return partner_dependence(pl_module, probe_batch, sets, pad_id=_pad_id(pl_module))


class CausalLeakProbe(Instrument):
    """For causal models (recurrent encoders, ``model.causal=true`` Transformers): after each validation
    epoch, change the token at ``position + offset`` in ``probe_size`` unpadded validation sequences and
    log ``probe/causal_leak``, the largest change of the features at positions ``<= position`` in
    batch-statistics mode. 0 for per-token norms; batch norm over the time axis leaks the future."""

    declared = keys.CAUSAL_LEAK

    def __init__(self, position: int = 8, offset: int = 4, probe_size: int = 16) -> None:
        super().__init__()
        self.position, self.offset, self.probe_size = position, offset, probe_size

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        leak = self.measure(pl_module, _val_loader(trainer))
        if leak is not None:
            self._log(trainer, pl_module, {keys.CAUSAL_LEAK_KEY: leak})

    def measure(self, pl_module: L.LightningModule, val) -> float | None:
        """The probe on the given validation loader (also what ``normbench.instruments.scorecard`` runs); None for a
        model that is not causal or fewer than two validation sequences long enough for it."""
        encoder = pl_module.encoder
        if not getattr(encoder, "causal", False):
            return None
        length = self.position + self.offset + 1
        long_enough = [val.dataset[i] for i in range(len(val.dataset)) if len(val.dataset[i][0]) >= length]
        if len(long_enough) < 2:
            return None
        tokens = torch.stack([ids[:length] for ids, _ in long_enough[: self.probe_size]]).to(pl_module.device)
        with batch_statistics_mode(pl_module):
            vocab = encoder.embed.num_embeddings if getattr(encoder, "embed", None) is not None else None
            return causal_leak(encoder, tokens, self.position, self.offset, vocab)


class GradNormMonitor(Instrument):
    """Every ``every_n_steps`` steps, log the gradient 2-norm of each layer (parameters grouped by the
    first ``depth`` parts of their names) as ``grad_norm/<layer>``, of all parameters as ``grad_norm/total``,
    and the largest total so far as ``grad_norm/max_total`` (exploding gradients; with ``every_n_steps: 1``
    the largest of every step)."""

    declared = keys.GRAD_NORMS

    def __init__(self, every_n_steps: int = 25, depth: int = 3) -> None:
        super().__init__()
        self.every_n_steps, self.depth = every_n_steps, depth
        self.max_total = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "max_total": self.max_total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.max_total = state_dict.get("max_total", 0.0)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        squares: dict[str, Tensor] = {}
        for name, param in pl_module.named_parameters():
            if param.grad is not None:
                layer = ".".join(name.split(".")[: self.depth])
                squares[layer] = squares.get(layer, 0.0) + param.grad.detach().float().pow(2).sum()
        if squares:
            metrics = {f"grad_norm/{k}": v.sqrt() for k, v in squares.items()}
            metrics["grad_norm/total"] = torch.stack(list(squares.values())).sum().sqrt()
            self.max_total = max(self.max_total, float(metrics["grad_norm/total"]))
            metrics["grad_norm/max_total"] = self.max_total
            self._log(trainer, pl_module, metrics, on_step=True, on_epoch=False)


class ConvergenceMonitor(Instrument):
    """After each validation epoch, log ``convergence/val_acc`` (the validation accuracy, kept as a series over
    the step), ``convergence/reached_target`` (1 once it has reached ``target_acc``) and
    ``convergence/steps_to_target``: the training step of the first validation at or above ``target_acc``;
    while it has not been reached, the steps trained so far (a lower bound, so a run that never gets there
    counts as at least its whole budget, with ``reached_target`` 0 saying so). Convergence speed, measured
    at the resolution of the validation interval."""

    declared = keys.CONVERGENCE

    def __init__(self, target_acc: float = 0.9) -> None:
        super().__init__()
        if not 0.0 < target_acc <= 1.0:
            raise ConfigError(f"callbacks.convergence.target_acc={target_acc} is out of range; accepted: (0, 1]")
        self.target_acc = target_acc
        self.reached_at: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reached_at": self.reached_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.reached_at = state_dict.get("reached_at")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = getattr(pl_module, "metrics", None)
        metric = metrics["val_acc"] if metrics is not None and "val_acc" in metrics else None
        if trainer.sanity_checking or metric is None:
            return
        # the epoch's accuracy from the module's own metric (Lightning fills callback_metrics only after this
        # hook); compute() is cached, so the module's logging of val/acc reuses it
        acc = float(metric.compute())
        if self.reached_at is None and acc >= self.target_acc:
            self.reached_at = trainer.global_step
        steps = trainer.global_step if self.reached_at is None else self.reached_at
        logged = {
            "convergence/val_acc": acc,
            "convergence/reached_target": float(self.reached_at is not None),
            "convergence/steps_to_target": float(steps),
        }
        self._log(trainer, pl_module, logged)


class NonFiniteGuard(Callback):
    """Stop before a NaN/inf reaches the weights: a non-finite loss or gradient raises ``NonFiniteError``
    with one line naming the step and the layer (the first module whose output is non-finite on the
    same batch, or the first parameter with a non-finite gradient). The optimizer step is not taken."""

    def __init__(self) -> None:
        self._batch: Any = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        self._batch = batch

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        tokens, mask = self._batch[0], self._batch[1]
        with batch_statistics_mode(pl_module):
            layer = first_non_finite_module(pl_module, lambda: pl_module(tokens, mask))
        where = f"first non-finite output in layer {layer}" if layer else "the model's outputs are finite"
        raise NonFiniteError(
            f"non-finite loss ({loss.item()}) at step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {self._batch_index(trainer)}): {where}; try a lower optim.lr or another norm"
        )

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        grads = [(name, param.grad) for name, param in pl_module.named_parameters() if param.grad is not None]
        if not grads:
            return
        if all_finite([grad for _, grad in grads]):
            return
        for name, grad in grads:
            if not torch.isfinite(grad).all():
                raise NonFiniteError(
                    f"non-finite gradient at step {trainer.global_step} (epoch {trainer.current_epoch}) "
                    f"in layer {name}; try a lower optim.lr, trainer.gradient_clip_val, or another norm"
                )

    @staticmethod
    def _batch_index(trainer: L.Trainer) -> int:
        return trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether every value is finite, with one host sync per device and dtype: the fused non-finite check of
    PyTorch's AMP (``GradScaler``'s, here with an unscale factor of exactly 1, so the values are unchanged).
    A max-|g| by ``_foreach_norm(ord=inf)`` was 1.6 ms a step on a CPU for an 8000x64 embedding (the kernel
    is not vectorized there), 50 us this way; one check per tensor costs a sync each (slow on a GPU)."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    flags = []
    for (device, _), group in groups.items():
        flags.append(torch.zeros(1, device=device))
        torch._amp_foreach_non_finite_check_and_unscale_(group, flags[-1], torch.ones(1, device=device))
    return not any(flag.item() for flag in flags)


class StepTimer(Callback):
    """Wall seconds between the ends of consecutive training steps (data loading included). The median is
    the cost of a step free of start-up, compilation and validation pauses, with no device sync: on a GPU
    the intervals settle at the rate the queued kernels finish."""

    def __init__(self) -> None:
        self.intervals: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None  # the pause for validation and the epoch's first batch is not a step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now

    def median(self) -> float | None:
        return statistics.median(self.intervals) if self.intervals else None
