"""The LightningModules: an encoder from `normbench.models` under a task head, with loss, metrics and optimizer.

`SequenceTask` holds what every task shares (encoder, AdamW with warm-up + cosine, the norms' step
counter, the checkpoint's run identity, `evaluate` for the instruments); `SequenceClassifier` and
`LanguageModel` add a head, a loss and metrics. `build_task` picks one from the datamodule's ``task``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from normbench.data.collate import IGNORE_INDEX
from normbench.distributed import destroy_process_group_at_exit
from normbench.errors import ConfigError
from normbench.norms import batch_stat_norms, set_training_step
from normbench.run.ddp import pad_to_common_length

Batch = tuple[Tensor, Tensor, Tensor]


def masked_mean(features: Tensor, mask: Tensor) -> Tensor:
    """Mean over the real tokens of each sequence (padding never enters the pooled vector)."""
    weights = mask.unsqueeze(-1).to(features.dtype)
    return (features * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class SequenceTask(L.LightningModule):
    """Base of every task module. Subclasses set ``self.head`` and ``self.metrics`` (``<stage>_<name>``) and implement
    ``forward``, ``_step`` and ``_sums`` (correct predictions, summed loss and count of scored items in one batch)."""

    #: the logged metric that picks ``best.ckpt``, and whether higher is better
    monitor: tuple[str, str] = ("val/acc", "max")

    def __init__(
        self,
        encoder: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup: float = 0.1,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"optim.lr={lr} must be > 0")
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f"optim.warmup={warmup} is the warm-up share of all steps; accepted: 0 <= warmup < 1")
        self.encoder = encoder
        self.synced_statistics = any(norm.sync for _, norm in batch_stat_norms(encoder))
        self.train_loss = MeanMetric()  # train/loss_epoch: every step's loss, weighted as the subclass counts
        self.logged_names: dict[str, str] = {}  # a metric's logged name where it differs from its key (bits: bpc)

    def _step(self, batch: Batch, stage: str) -> Tensor:
        raise NotImplementedError

    def _sums(self, logits: Tensor, target: Tensor) -> tuple[int, float, int]:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # in every process of a DDP job, once its group exists

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record what was trained (model, norm, data and their configs) so a resume can refuse a mismatch."""
        if getattr(self, "run_identity", None) is not None:
            checkpoint["normbench"] = self.run_identity

    def log_training_loss(self, loss: Tensor, weight: int | Tensor) -> None:
        """``train/loss_step`` at the steps the loggers write (every ``trainer.log_every_n_steps``) and the epoch's
        weighted mean as ``train/loss_epoch``: the keys of ``self.log(on_step=True, on_epoch=True)``. Lightning's
        ``self.log`` moves its record to the device on every call (a causal LM's four calls a step were a sixth of
        its batch-4 CPU step), so the mean accumulates in a metric logged once an epoch and the step value is
        logged only where it is written."""
        self.train_loss.update(loss.detach(), weight)
        trainer = self._trainer
        if trainer is not None and trainer._logger_connector.should_update_logs:  # Lightning's own test, same step
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)

    def _log_step(self, stage: str, loss: Tensor, weight: int | Tensor) -> None:
        """Log a step whose metrics were updated: training its loss (``log_training_loss``; the metrics once an
        epoch), validation and test their loss (``weight``: the scored items; under DDP averaged over the
        processes) and their metric objects."""
        if stage == "train":
            self.log_training_loss(loss, weight)
            return
        self.log(
            f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=int(weight), sync_dist=True
        )
        self.log_dict(self._stage_metrics(stage), on_step=False, on_epoch=True, prog_bar=True)

    def _stage_metrics(self, stage: str) -> dict[str, Metric]:
        """The stage's metric objects under their logged names (``val_bits`` as ``val/bpc``)."""
        prefix = f"{stage}_"
        return {
            f"{stage}/{self.logged_names.get(key[len(prefix) :], key[len(prefix) :])}": metric
            for key, metric in self.metrics.items()
            if key.startswith(prefix)
        }

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics, accumulated over its steps (``log_training_loss``)."""
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log_dict(self._stage_metrics("train"), on_step=False, on_epoch=True)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        set_training_step(self.encoder, self.global_step)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    @torch.no_grad()
    def evaluate(self, loader, min_batch: int = 1) -> dict[str, float]:
        """Accuracy and mean loss per scored item (example, or target token) over a loader in the module's
        current mode (the instruments call it in eval mode and in batch-statistics mode); batches with fewer
        than ``min_batch`` sequences are skipped."""
        correct, loss_sum, seen = 0, 0.0, 0
        for tokens, mask, target in loader:
            if len(target) < min_batch:
                continue
            tokens, mask, target = tokens.to(self.device), mask.to(self.device), target.to(self.device)
            batch_correct, batch_loss, batch_seen = self._sums(self(tokens, mask), target)
            correct, loss_sum, seen = correct + batch_correct, loss_sum + batch_loss, seen + batch_seen
        return {"acc": correct / max(seen, 1), "loss": loss_sum / max(seen, 1)}

    def configure_optimizers(self):
        """AdamW (no decay on norms, biases and embeddings) with a per-step warm-up + cosine schedule."""
        optimizer, schedule = self.optimizer_and_schedule(int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def optimizer_and_schedule(self, total_steps: int) -> tuple[torch.optim.Optimizer, LambdaLR]:
        """The optimizer and its schedule over ``total_steps`` steps; also what a plain PyTorch loop over this
        module uses (the benchmark compares the two), so both train exactly alike."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                plain_weight = name == "weight" and isinstance(module, nn.Linear)
                (decay if plain_weight else no_decay).append(param)
        hp = self.hparams
        # the fused kernel updates every parameter in one call: on a CPU 8x faster than the default
        # per-parameter loop (a third of a small model's training step at batch size 2). Lightning refuses to clip
        # the gradients of a fused optimizer under mixed precision (bf16-mixed, scale=gpu's), so not there.
        trainer = self._trainer
        mixed = trainer is not None and "mixed" in str(trainer.precision)
        fused = not mixed and all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
            fused=fused,
        )
        total = max(1, total_steps)
        warmup = max(1, int(hp.warmup * total))
        return optimizer, LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))


class SequenceClassifier(SequenceTask):
    """Sequence classification: masked mean pool of the encoder's features, then a linear head.

    Batches are ``(tokens[B, T], mask[B, T], label[B])``. Metrics are logged as ``train/loss``,
    ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``, so every logger groups them alike.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup: float = 0.1,
    ) -> None:
        super().__init__(encoder, lr, weight_decay, betas, warmup)
        self.save_hyperparameters(ignore=["encoder"])
        self.head = nn.Linear(encoder.output_dim, num_classes)
        self.metrics = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in ("train", "val", "test")}
        )

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.training and self.synced_statistics:  # under DDP every process must make the same norm calls
            tokens, mask = pad_to_common_length(tokens, mask, getattr(self.encoder, "pad_id", 0))
        return self.head(masked_mean(self.encoder(tokens, mask), mask))

    def _step(self, batch: Batch, stage: str) -> Tensor:
        tokens, mask, target = batch
        logits = self(tokens, mask)
        loss = F.cross_entropy(logits, target)
        # forward() would also compute a per-batch value nobody logs (slow)
        self.metrics[f"{stage}_acc"].update(logits, target)
        self._log_step(stage, loss, len(target))
        return loss

    def _sums(self, logits: Tensor, target: Tensor) -> tuple[int, float, int]:
        loss = float(F.cross_entropy(logits, target, reduction="sum"))
        return int((logits.argmax(-1) == target).sum()), loss, len(target)


class TokenNLL(Metric):
    """Negative log-likelihood per target token (nats), summed exactly over an epoch (and over processes).

    ``scale`` turns it into another unit of the same quantity: ``1 / ln 2`` gives bits per token.
    """

    full_state_update = False

    def __init__(self, scale: float = 1.0, exponentiate: bool = False) -> None:
        super().__init__()
        self.scale, self.exponentiate = scale, exponentiate
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_sum: Tensor, tokens: Tensor) -> None:
        self.nll_sum += nll_sum.detach().double()
        self.tokens += tokens.detach().long()

    def compute(self) -> Tensor:
        mean = self.nll_sum / self.tokens.clamp_min(1)
        return (mean.exp() if self.exponentiate else mean * self.scale).float()


def token_nll_sum(logits: Tensor, target: Tensor) -> Tensor:
    """Summed negative log-likelihood (nats) of the scored next tokens (``target != IGNORE_INDEX``)."""
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def perplexity() -> TokenNLL:
    """exp(mean NLL per token)."""
    return TokenNLL(exponentiate=True)


def bits_per_token() -> TokenNLL:
    """Mean NLL per token in bits; bits per character when every token is one character."""
    return TokenNLL(scale=1.0 / math.log(2.0))


class LanguageModel(SequenceTask):
    """Causal next-token prediction: a linear head on every position's features.

    Batches are ``(tokens[B, T], mask[B, T], next_tokens[B, T])`` with ``IGNORE_INDEX`` where there is no
    target (padding), so the loss and every metric count real tokens only. Logged: ``<stage>/loss`` (nats
    per token), ``<stage>/acc`` (next-token top-1), ``<stage>/ppl`` and ``<stage>/bpc`` when every token is
    one character (``char_level``), else ``<stage>/bpt`` (bits per token); val/test exactly over the split.
    """

    monitor = ("val/loss", "min")

    def __init__(
        self,
        encoder: nn.Module,
        vocab_size: int,
        char_level: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup: float = 0.1,
        data_name: str = "this task",
    ) -> None:
        if not getattr(encoder, "causal", False):
            raise ConfigError(
                f"data={data_name} is language modeling (next-token prediction) and needs a causal model: "
                "model=transformer model.causal=true, model=lstm or model=gru"
            )
        super().__init__(encoder, lr, weight_decay, betas, warmup)
        self.save_hyperparameters(ignore=["encoder"])
        self.head = nn.Linear(encoder.output_dim, vocab_size)
        self.bits_name = "bpc" if char_level else "bpt"
        self.logged_names = {"bits": self.bits_name}
        stages = ("train", "val", "test")
        self.metrics = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(vocab_size, average="micro", ignore_index=IGNORE_INDEX) for s in stages}
            | {f"{s}_ppl": perplexity() for s in stages}
            | {f"{s}_bits": bits_per_token() for s in stages}
        )

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.encoder(tokens, mask))

    def _step(self, batch: Batch, stage: str) -> Tensor:
        tokens, mask, target = batch
        logits = self(tokens, mask)
        nll_sum = token_nll_sum(logits, target)
        count = (target != IGNORE_INDEX).sum()
        loss = nll_sum / count.clamp_min(1)
        self.metrics[f"{stage}_acc"].update(logits.detach().flatten(0, 1), target.flatten())
        self.metrics[f"{stage}_ppl"].update(nll_sum.detach(), count)
        self.metrics[f"{stage}_bits"].update(nll_sum.detach(), count)
        # weighted by the scored tokens, so the epoch value is the exact mean over all tokens
        self._log_step(stage, loss, count)
        return loss

    def _sums(self, logits: Tensor, target: Tensor) -> tuple[int, float, int]:
        scored = target != IGNORE_INDEX
        correct = int(((logits.argmax(-1) == target) & scored).sum())
        return correct, float(token_nll_sum(logits, target)), int(scored.sum())


def build_task(datamodule: Any, encoder: nn.Module, **optim: Any) -> SequenceTask:
    """The module for the datamodule's ``task``: ``classification`` (the default) or ``lm``."""
    task = getattr(datamodule, "task", "classification")
    if task == "classification":
        return SequenceClassifier(encoder, datamodule.num_classes, **optim)
    if task == "lm":
        name = getattr(datamodule, "name", None) or type(datamodule).__name__
        return LanguageModel(encoder, datamodule.vocab_size, datamodule.char_level, data_name=name, **optim)
    raise ConfigError(f"data task {task!r} is unknown; accepted: classification, lm")
