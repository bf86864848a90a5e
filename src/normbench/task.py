"""The LightningModule: an encoder from `normbench.models`, a classification head, loss, metrics, optimizer."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from normbench.errors import ConfigError
from normbench.norms import batch_stat_norms, set_training_step
from normbench.scaling import pad_to_common_length


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


class SequenceClassifier(L.LightningModule):
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
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"optim.lr={lr} must be > 0")
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f"optim.warmup={warmup} is the warm-up share of all steps; accepted: 0 <= warmup < 1")
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.synced_statistics = any(norm.sync for _, norm in batch_stat_norms(encoder))
        self.head = nn.Linear(encoder.output_dim, num_classes)
        self.metrics = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in ("train", "val", "test")}
        )

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if self.training and self.synced_statistics:  # under DDP every process must make the same norm calls
            tokens, mask = pad_to_common_length(tokens, mask, self.encoder.embed.padding_idx or 0)
        return self.head(masked_mean(self.encoder(tokens, mask), mask))

    def _step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        tokens, mask, target = batch
        logits = self(tokens, mask)
        loss = F.cross_entropy(logits, target)
        accuracy = self.metrics[f"{stage}_acc"]
        accuracy(logits, target)
        on_step = stage == "train"
        batch_size, sync = len(target), not on_step  # under DDP: val/test loss averaged over the processes
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=sync
        )
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record what was trained (model, norm, data and their configs) so a resume can refuse a mismatch."""
        if getattr(self, "run_identity", None) is not None:
            checkpoint["normbench"] = self.run_identity

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        set_training_step(self.encoder, self.global_step)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    @torch.no_grad()
    def evaluate(self, loader, min_batch: int = 1) -> dict[str, float]:
        """Accuracy and mean loss over a loader in the module's current mode (the instruments call it in
        eval mode and in batch-statistics mode); batches with fewer than ``min_batch`` examples are skipped."""
        correct, loss_sum, seen = 0, 0.0, 0
        for tokens, mask, target in loader:
            if len(target) < min_batch:
                continue
            tokens, mask, target = tokens.to(self.device), mask.to(self.device), target.to(self.device)
            logits = self(tokens, mask)
            correct += int((logits.argmax(-1) == target).sum())
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            seen += len(target)
        return {"acc": correct / max(seen, 1), "loss": loss_sum / max(seen, 1)}

    def configure_optimizers(self):
        """AdamW (no decay on norms, biases and embeddings) with a per-step warm-up + cosine schedule."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                plain_weight = name == "weight" and isinstance(module, nn.Linear)
                (decay if plain_weight else no_decay).append(param)
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(hp.warmup * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
