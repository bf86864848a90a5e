"""Metric and setting names in words for a reader (``val/acc`` -> ``validation accuracy``), for figure axes.

Names this table does not know keep their last part with spaces (``data.foo_bar`` -> ``foo bar``), so a new
metric or setting is still labelled, only less well.
"""

from __future__ import annotations

import re

SPLITS = {"val": "validation", "test": "test", "train": "training"}

#: the last part of a metric name (after ``val/`` ...) in words
METRICS = {
    "acc": "accuracy",
    "loss": "loss (nats)",
    "ppl": "perplexity",
    "bpc": "bits per character",
    "bpt": "bits per token",
    "acc_batch_stats": "accuracy with batch statistics",
    "loss_batch_stats": "loss with batch statistics",
    "train_eval_gap": "train-eval gap (acc. batch − running stats)",
    "bpc_batch_stats": "bits per character with batch statistics",
    "bpc_train_eval_gap": "bits per character, batch − running statistics",
    "causal_leak": "causal leak (largest change of earlier outputs)",
    "partner_dependence": "batch-partner dependence (logit std)",
    "mean_dist": "batch mean's distance from running",
    "var_dist": "batch variance's distance from running",
    "mean_shift": "output shift by the batch mean (running std)",
    "scale_shift": "log output scale by the batch variance",
    "train_step_s": "time of a training step (s)",
    "wall_time_s": "wall time of the job (s)",
}

#: settings (a swept config key, the key of ``metric@key=value``, a data statistic) in words
SETTINGS = {
    "batch_size": "batch size",
    "pad_to": "padded length (tokens)",
    "length_spread": "spread of sequence lengths",
    "spread": "spread of sequence lengths",
    "len": "test length (tokens)",
    "eval_batch": "evaluation batch size",
    "train_padding_share": "padding share of the training tokens",
    "padding_share": "padding share of the tokens",
    "lr": "learning rate",
    "sync": "synced statistics",
    "step": "training step",
}

AT = re.compile(r"^(?P<name>[^@]+)@(?P<key>[^=]+)=(?P<value>.+)$")


def setting_words(key: str) -> str:
    """``data.batch_size`` -> ``batch size``; ``data_stats/train_padding_share`` -> its words."""
    leaf = re.split(r"[./]", key)[-1]
    return SETTINGS.get(leaf, leaf.replace("_", " "))


def metric_words(metric: str) -> str:
    """``val/acc`` -> ``validation accuracy``; ``test/acc@len=64`` -> ``test accuracy at test length 64``."""
    if match := AT.match(metric):
        setting = re.sub(r" \(.*\)$", "", setting_words(match["key"]))  # no unit inside the phrase
        return f"{metric_words(match['name'])} at {setting} {match['value']}"
    *prefix, leaf = metric.split("/")
    words = METRICS.get(leaf, leaf.replace("_", " "))
    split = SPLITS.get(prefix[0]) if prefix else None
    if prefix and prefix[0] == "grad_norm":
        return f"gradient norm ({leaf})"
    return f"{split} {words}" if split else words
