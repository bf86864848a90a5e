"""The recurrent-cell bench section and the GPU check's data cache, in process and at tiny sizes."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from normbench.bench.gpu_check import data_paths, offline_problems
from normbench.bench.recurrent import NORM_TARGETS, PackedRNN, native_label, recurrent_cost
from normbench.bench.timing import use_clock


def test_packed_reference_gives_each_sequence_alone_and_zeros_at_padding() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([5, 2, 4])
    rnn = nn.LSTM(6, 7, batch_first=True)
    x = torch.randn(3, 5, 6)
    y = PackedRNN(rnn, lengths)(x)
    assert y.shape == (3, 5, 7)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = rnn(x[i : i + 1, :n])
        torch.testing.assert_close(y[i, :n], alone[0])
        assert not y[i, n:].any()


def test_recurrent_rows_compare_none_with_the_native_module_and_each_norm_with_none() -> None:
    use_clock("wall")
    overrides = ["++model.embed_dim=8", "++model.hidden_size=8"]  # every model: the sizes are the cells'
    lengths = torch.tensor([6, 3, 5, 6])
    device = torch.device("cpu")
    rows = recurrent_cost(["lstm", "gru"], ["layer", "none", "rms"], lengths, overrides, device, 2, 0.001)

    assert [r["layer"] for r in rows] == [
        f"{cell} norm={n}" for cell in ("NormLSTMLayer", "NormGRULayer") for n in ("none", "layer", "rms")
    ]
    by_name = {r["layer"]: r for r in rows}
    assert by_name["NormLSTMLayer norm=none"]["reference"] == native_label("lstm", device) == "nn.LSTM (ATen, packed)"
    assert by_name["NormGRULayer norm=none"]["reference"] == "nn.GRU (ATen, packed)"
    assert by_name["NormLSTMLayer norm=none"]["target"] == "<= 1.3"  # on a CPU
    assert by_name["NormGRULayer norm=rms"]["target"] == "reported" and by_name["NormGRULayer norm=rms"]["met"] == "-"
    for row in rows:
        assert row["shape [B,T,C]"] == "4x6x8"
        assert math.isclose(row["padding %"], 100 * (1 - 20 / 24), rel_tol=1e-6)
        assert row["ratio"] > 0 and row["ours ms"] > 0 and row["reference ms"] > 0
        if row["layer"].endswith(("layer", "batch_masked")):
            limit = NORM_TARGETS[row["layer"].rsplit("=", 1)[1]]
            assert row["met"] == ("yes" if row["ratio"] <= limit else "no")
    lstm_none = by_name["NormLSTMLayer norm=none"]["ours ms"]
    assert by_name["NormLSTMLayer norm=layer"]["reference ms"] == lstm_none  # the same measurements


def test_data_cache_check_names_what_would_send_the_data_modules_to_pip(tmp_path: Path) -> None:
    problems = offline_problems(tmp_path)
    assert len(problems) == 2 and "missing" in problems[0] and "no *_gut.txt files" in problems[1]
    paths = data_paths(tmp_path)
    paths["mr"].parent.mkdir(parents=True)
    paths["mr"].write_text("1\t0.5\tnot the pinned file\r\n")
    paths["shakespeare_char"].mkdir()
    (paths["shakespeare_char"] / "a_gut.txt").write_text("not the works")
    problems = offline_problems(tmp_path)
    assert "sha256 differs from the pinned" in problems[0] and "digest differs from the pinned" in problems[1]
