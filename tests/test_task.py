"""The LightningModule's pieces: masked pooling and the learning-rate schedule."""

import math

import pytest
import torch

from normbench.errors import ConfigError
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import norm_factory
from normbench.run.task import SequenceClassifier, masked_mean, warmup_cosine


def test_masked_mean_ignores_padding_values() -> None:
    features = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-50.0], [7.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(masked_mean(features, mask), torch.tensor([[2.0], [2.0]]))


def test_warmup_then_cosine_to_zero() -> None:
    total, warmup = 100, 10
    factors = [warmup_cosine(step, total, warmup) for step in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[100] == pytest.approx(0.0, abs=1e-12)
    assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_bad_optimizer_settings_are_config_errors() -> None:
    encoder = TransformerEncoder(10, norm_factory("layer"), d_model=8, n_heads=2, n_layers=1, d_ff=8)
    with pytest.raises(ConfigError, match=r"optim.warmup=1.5"):
        SequenceClassifier(encoder, 2, warmup=1.5)
    with pytest.raises(ConfigError, match=r"optim.lr=0"):
        SequenceClassifier(encoder, 2, lr=0)


def test_training_logs_loss_per_step_and_accuracy_per_epoch(tmp_path) -> None:
    """train/loss_step is written at the steps the logger writes every step-logged value (a reference callback's,
    logged on every step), and train/loss_epoch is the epoch's mean loss weighted by the batch sizes."""
    import csv

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from normbench.data.collate import pad_collate

    class Reference(L.Callback):
        def __init__(self) -> None:
            self.losses: list[tuple[float, int]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            pl_module.log("reference", float(batch_idx), on_step=True, on_epoch=False)
            if trainer.current_epoch == 1:
                self.losses.append((float(outputs["loss"]), len(batch[-1])))

    torch.manual_seed(0)
    data = [(torch.randint(1, 10, (int(torch.randint(2, 6, ()).item()),)), i % 2) for i in range(29)]
    loader = DataLoader(data, batch_size=4, collate_fn=pad_collate)  # 8 steps an epoch, the last of one example
    module = SequenceClassifier(
        TransformerEncoder(10, norm_factory("layer"), d_model=8, n_heads=2, n_layers=1, d_ff=8), 2
    )
    reference = Reference()
    trainer = L.Trainer(
        max_epochs=2, logger=CSVLogger(tmp_path), log_every_n_steps=3, callbacks=[reference],
        enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, loader, loader)
    logged = trainer.callback_metrics
    assert {"train/loss_step", "train/loss_epoch", "train/acc", "val/acc", "val/loss"} <= set(logged)
    assert 0.0 <= float(logged["train/acc"]) <= 1.0  # also false for NaN
    mean = sum(loss * n for loss, n in reference.losses) / sum(n for _, n in reference.losses)
    assert float(logged["train/loss_epoch"]) == pytest.approx(mean, rel=1e-5)
    with open(trainer.logger.experiment.metrics_file_path) as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(row["step"]) for row in rows if row.get("train/loss_step")]
    assert steps == [int(row["step"]) for row in rows if row.get("reference")] and len(steps) == 5  # 16 steps / 3
