"""Checkpoint files without a Trainer: which file a resume continues from, the identity a checkpoint must match,
and the refusal to write non-finite weights (fast; tests/test_resume.py runs them end to end)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from normbench.errors import ConfigError, NonFiniteError
from normbench.run.checkpointing import AtomicModelCheckpoint, check_checkpoint, resume_checkpoint

IDENTITY = {"model": "lstm", "norm": "layer", "data": "mr", "model_config": {"hidden_size": 8}, "norm_config": {}}


def test_resume_continues_from_last_ckpt_in_the_run_dir_or_from_ckpt_path(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path, resume=True, ckpt_path=None) is None  # killed before its first checkpoint
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resume_checkpoint(tmp_path, resume=True, ckpt_path=None) == last
    assert resume_checkpoint(tmp_path, resume=False, ckpt_path=None) is None
    assert resume_checkpoint(tmp_path, resume=False, ckpt_path="~/x.ckpt") == Path.home() / "x.ckpt"


@pytest.mark.parametrize("key", ["model", "norm", "data", "model_config", "norm_config"])
def test_a_checkpoint_of_another_config_is_refused_naming_what_differs(tmp_path: Path, key: str) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"normbench": IDENTITY}, path)
    check_checkpoint(path, dict(IDENTITY))  # the same run: accepted
    other = {**IDENTITY, key: "something else"}
    with pytest.raises(ConfigError) as err:
        check_checkpoint(path, other)
    assert str(err.value) == (
        f"checkpoint {path} was trained with model=lstm norm=layer data=mr, this run is "
        f"model={other['model']} norm={other['norm']} data={other['data']} (differs in {key}): resume with the "
        "config it was trained with, or start a new run"
    )


def test_non_finite_weights_are_never_checkpointed(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    saved = []
    trainer = SimpleNamespace(
        lightning_module=module,
        global_step=7,
        current_epoch=0,
        is_global_zero=True,
        loggers=[],
        save_checkpoint=lambda path, weights_only: saved.append(path) or Path(path).write_bytes(b"ckpt"),
    )
    callback = AtomicModelCheckpoint(dirpath=tmp_path)
    callback._save_checkpoint(trainer, str(tmp_path / "last.ckpt"))  # finite: written through a partial file
    assert saved == [str(tmp_path / "last.ckpt.partial")] and (tmp_path / "last.ckpt").read_bytes() == b"ckpt"
    with torch.no_grad():
        module.bias[1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite weights in bias after step 7"):
        callback._save_checkpoint(trainer, str(tmp_path / "last.ckpt"))
    assert len(saved) == 1 and (tmp_path / "last.ckpt").read_bytes() == b"ckpt"


def test_random_state_checkpoint_restores_torch_and_python_generators() -> None:
    """A resume draws the dropout masks and Python numbers the uninterrupted run would have drawn."""
    import random

    from normbench.run.checkpointing import RandomStateCheckpoint

    keeper = RandomStateCheckpoint()
    torch.manual_seed(3)
    random.seed(3)
    state = keeper.state_dict()
    expected = (torch.rand(4), random.random())
    torch.manual_seed(99)
    random.seed(99)
    keeper.load_state_dict(state)
    got = (torch.rand(4), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


@pytest.mark.parametrize("every", [1, 7])
def test_periodic_checkpoints_keep_last_ckpt_only_at_every_positive_interval(tmp_path: Path, every: int) -> None:
    """Every n >= 1 steps: last.ckpt and the RNG keeper, no numbered top-k files beside it; 0 turns both off."""
    from normbench.run.checkpointing import RandomStateCheckpoint, checkpoint_callbacks

    callbacks = checkpoint_callbacks(tmp_path, every, save_best=False)
    (periodic,) = [c for c in callbacks if isinstance(c, AtomicModelCheckpoint)]
    assert (periodic.save_last, periodic.save_top_k, periodic._every_n_train_steps) == (True, 0, every)
    assert any(isinstance(c, RandomStateCheckpoint) for c in callbacks)
    assert checkpoint_callbacks(tmp_path, 0, save_best=False) == []
