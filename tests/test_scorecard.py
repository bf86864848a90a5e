"""The probe scorecard: the values the maths fixes for the built-in norms, the files it writes, its errors."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from normbench.instruments import scorecard
from normbench.instruments.distributed_probe import synced_vs_joined

TINY = {
    "transformer": ["model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.n_layers=1"],
    "lstm": ["model.embed_dim=16", "model.hidden_size=16"],
}
PER_TOKEN = ["none", "layer", "rms"]


class LocalBatchNorm(nn.Module):
    """A user's masked batch norm that declares batch statistics but keeps them per process (no sync)."""

    uses_batch_stats = True

    def __init__(self, num_features: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask[..., None].to(x.dtype)
        dims = tuple(range(x.dim() - 1))
        count = weights.sum(dims).clamp_min(1)
        mean = (x * weights).sum(dims) / count
        var = ((x - mean) ** 2 * weights).sum(dims) / count
        return (x - mean) * torch.rsqrt(var + 1e-5) * weights


def _scores(tmp_path: Path, mr_file: Path, model: str, norms: list[str]) -> dict[tuple[str, str], dict]:
    out = tmp_path / "card"
    data = [f"data.path={mr_file}", f"data.cache_dir={tmp_path / 'cache'}", "data.vocab_size=200", "data.max_len=24"]
    args = [f"norm={','.join(norms)}", f"model={model}", *TINY[model], *data, "--warmup-batches=3"]
    scorecard.main([*args, "--out", str(out)])
    record = json.loads((out / "scorecard.json").read_text())
    assert record["command"].startswith(
        f"python -m normbench.instruments.scorecard norm={','.join(norms)} model={model}"
    )
    rows = list(csv.DictReader((out / "scorecard.csv").open()))
    assert len(rows) == len(record["scores"]) == 6 * len(norms)  # every property but the opt-in distributed one
    markdown = (out / "scorecard.md").read_text().splitlines()
    assert markdown[2].startswith("| norm | model | batch independence | causality |")
    assert len(markdown) == 4 + len(norms)
    return {(s["norm"], s["property"]): s for s in record["scores"]}


@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_built_in_norms_score_what_the_maths_says(model: str, mr_file: Path, tmp_path: Path, capsys) -> None:
    scores = _scores(tmp_path, mr_file, model, [*PER_TOKEN, "batch_masked", "batch", "batch_renorm", "power"])
    assert "normbench probe scorecard" in capsys.readouterr().out  # the rich table
    for norm in PER_TOKEN:  # no statistics across tokens or examples: exactly 0, not merely small
        for prop in ("partner", "causal", "train_eval", "length"):
            assert scores[norm, prop]["value"] == 0.0 and scores[norm, prop]["why"] == "exact", (norm, prop)
        # more padding or another batch shape changes the Transformer's attention sums and matmul blocking
        # by float rounding only; in the LSTM, appended padding comes after every real step: exactly 0
        assert scores[norm, "padding"]["value"] <= (1e-6 if model == "transformer" else 0.0)
        assert scores[norm, "batch_one"]["value"] <= 1e-5 and scores[norm, "batch_one"]["status"] == "pass"
    for norm in ("batch_masked", "batch"):
        for prop in ("partner", "train_eval", "length"):
            assert scores[norm, prop]["status"] == "fail" and scores[norm, prop]["value"] > 1e-3, (norm, prop)
    for prop in ("partner", "train_eval"):  # PowerNorm normalizes with running statistics in training too
        assert scores["power", prop]["value"] == 0.0, prop
    for prop in ("partner", "causal", "padding", "train_eval", "length"):  # r = 1, d = 0 in its first 100 steps
        want = scores["batch_masked", prop]["value"]
        assert scores["batch_renorm", prop]["value"] == pytest.approx(want, rel=1e-4, abs=1e-6), prop
    # masked statistics leave padding out; naive batch norm's Transformer statistics count the pads
    assert scores["batch_masked", "padding"]["value"] <= (1e-6 if model == "transformer" else 0.0)
    if model == "transformer":
        assert scores["batch", "padding"]["why"] == "padding" and scores["batch", "padding"]["value"] > 1e-2
        for norm in ("batch_masked", "batch"):  # statistics over the time axis carry the future back
            assert scores[norm, "causal"]["why"] == "future" and scores[norm, "batch_one"]["why"] == "own-stats"
    else:  # per-step statistics never see the future; a batch of one sequence is refused by the cell
        for norm in ("batch_masked", "batch"):
            assert scores[norm, "causal"]["value"] == 0.0
            assert (scores[norm, "batch_one"]["status"], scores[norm, "batch_one"]["value"]) == ("refused", None)


@pytest.mark.slow
def test_distributed_equivalence_holds_for_synced_norms_and_fails_for_per_process_statistics() -> None:
    configs = [{"_target_": f"normbench.norms.{n}"} for n in ("MaskedBatchNorm", "PowerNorm")]
    configs.append({"_target_": f"{__name__}.LocalBatchNorm"})
    synced, power, local = synced_vs_joined(configs)
    assert synced <= scorecard.TOLERANCE and power <= scorecard.TOLERANCE
    assert local > 0.05  # half a batch's statistics are not the whole batch's
    assert scorecard.distributed_values([{"_target_": "normbench.norms.LayerNorm"}]) == [
        None
    ]  # nothing to sync: not measured


def test_judge_names_each_outcome() -> None:
    partner = scorecard.PROPERTIES[0]
    assert scorecard.judge(partner, 0.0) == ("pass", "exact")
    assert scorecard.judge(partner, 1e-7) == ("pass", "rounding")
    assert scorecard.judge(partner, 0.1) == ("fail", "batch-mates")
    assert scorecard.judge(partner, math.inf) == ("fail", "non-finite")
    assert scorecard.judge(partner, scorecard.REFUSED) == ("refused", "too-few")
    assert scorecard.judge(scorecard.PROPERTIES[-1], None) == ("n/a", "per-token")


def test_an_unknown_norm_is_refused_in_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        scorecard.main(["norm=layer,btach"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: norm=btach is unknown; accepted: batch, batch_masked, batch_renorm, batch_step")
