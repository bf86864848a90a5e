"""Hydra entry point: config -> datamodule -> model -> Trainer -> results.json and a one-line summary."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from normbench.cli.choices import check_group_choices
from normbench.cli.schemas import register_schemas
from normbench.distributed import is_global_zero
from normbench.errors import ConfigError, instantiating, one_line, user_error, user_errors_as_one_line
from normbench.models.compile import compile_encoder
from normbench.results import (
    RESULTS_FILE,
    check_earned,
    git_commit,
    library_versions,
    read_results,
    timed,
    write_json_atomic,
)
from normbench.run.ddp import ddp_job
from normbench.run.trainer import trainer_config
from normbench.run.validation import check_override_keys, validate_config

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


def _choices() -> dict[str, str]:
    """Which option of each config group this job uses (``norm=layer`` -> ``{"norm": "layer"}``)."""
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v and not k.startswith("hydra")}


def run_summary(cfg: DictConfig) -> dict[str, Any]:
    """The key config values every record of this run carries (results.json, W&B tags, summary line)."""
    from normbench.norm_factory import norm_label

    choices = _choices()
    return {
        "model": choices.get("model"),
        # by its option (norm=input_batch builds norm `none` inside the network, but is its own entry in a
        # comparison); a user's class (norm=custom) by its name or class
        "norm": norm_label(OmegaConf.to_container(cfg.norm), choices.get("norm")),
        "data": choices.get("data"),
        "batch_size": cfg.data.batch_size,
        "seed": cfg.seed,
        "experiment": cfg.experiment_name,
    }


def override_tags() -> list[str]:
    """This job's overrides (swept values included) as W&B tags, so a dashboard groups and filters a sweep's
    runs without hand work; paths and other excluded keys are left out (W&B tags hold 64 characters)."""
    hydra_cfg = HydraConfig.get()
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    tags = []
    for override in hydra_cfg.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in excluded and not key.startswith("hydra.") and len(override) <= 64:
            tags.append(override)
    return tags


def run_identity(cfg: DictConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about its run, and what a resume must match."""
    return {
        **{k: summary[k] for k in ("model", "norm", "data")},
        "model_config": {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "compile"},
        "norm_config": OmegaConf.to_container(cfg.norm, resolve=True),
    }


def jobs_side_by_side() -> bool:
    """True in a multirun job whose launcher is not Hydra's basic one (joblib, Slurm ...): jobs may run at once."""
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    return hydra_cfg.mode == RunMode.MULTIRUN and not launcher.endswith("BasicLauncher")


def set_threads(threads: Any) -> None:
    """``threads``: torch's intra-op threads for this process (None keeps torch's default, one per core)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads!r} is out of range; accepted: null (torch's default) or an integer >= 1")
    import torch

    torch.set_num_threads(threads)


def build_datamodule(cfg: DictConfig):
    """The configured datamodule, prepared and set up for fitting."""
    from hydra.utils import instantiate

    with instantiating("data"):
        datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_module(cfg: DictConfig, datamodule):
    """The configured encoder (model + norm, compiled if asked) inside the LightningModule for the data's task."""
    from hydra.utils import get_class

    from normbench.norm_factory import input_norm, norm_factory
    from normbench.run.task import build_task

    model_options = OmegaConf.to_container(cfg.model, resolve=True)
    norm_config = OmegaConf.to_container(cfg.norm, resolve=True)
    compile_option = model_options.pop("compile")
    num_features = getattr(datamodule, "num_features", None)  # numeric sequences: an input projection
    inputs = (
        {"vocab_size": None, "num_features": num_features} if num_features else {"vocab_size": datamodule.vocab_size}
    )
    with instantiating("model"):
        encoder = get_class(model_options.pop("_target_"))(
            norm=norm_factory(norm_config),
            input_norm=input_norm(norm_config, model_options.pop("input_batch_norm")),
            pad_id=datamodule.pad_id,
            **inputs,
            **model_options,
        )
    compile_encoder(encoder, compile_option)
    return build_task(datamodule, encoder, **OmegaConf.to_container(cfg.optim, resolve=True))


def _trained_in_spawned_processes(trainer) -> bool:
    launcher = getattr(trainer.strategy, "launcher", None)
    return type(launcher).__name__ == "_MultiProcessingLauncher" and trainer.world_size > 1


def logged_instruments(trainer) -> dict[str, float]:
    """The instruments' last logged values (the keys normbench.instruments.metrics declares)."""
    from normbench.instruments.metrics import declared

    return {k: float(v) for k, v in trainer.callback_metrics.items() if declared(k)}


def early_stopping_callback(options: Any, monitor: tuple[str, str]):
    """Lightning's ``EarlyStopping`` on the task's validation metric, or None (``early_stopping.patience: null``).

    Under a max-epoch cap it gives each run the epochs it needs: few for small batches (many steps an epoch),
    many for large ones, so a comparison across batch sizes is not one of under-training."""
    patience = (options or {}).get("patience")
    if patience is None:
        return None
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ConfigError(
            f"early_stopping.patience={patience!r} is out of range; "
            "accepted: null (no early stopping) or an integer >= 0"
        )
    from lightning.pytorch.callbacks import EarlyStopping

    min_delta = options.get("min_delta", 0.0)
    # strict=False: a run whose step cap ends it before its first validation has nothing to stop on; it is
    # then evaluated on its last weights (results.json: early_stopping.best null)
    return EarlyStopping(
        monitor=monitor[0], mode=monitor[1], patience=patience, min_delta=float(min_delta), strict=False
    )


def fit_and_evaluate(
    cfg: DictConfig, run_dir: Path, summary: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    """Train (or continue a killed run), then validate and test the final weights; returns the results
    record's run-specific part. ``timings`` gets the wall seconds of each phase."""
    with timed(timings, "imports"):
        import lightning as L
        from hydra.utils import instantiate
        from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

        from normbench.instruments.callbacks import Instrument, StepTimer
        from normbench.instruments.evaluation import extra_evaluations
        from normbench.norm_factory import check_before_data
        from normbench.norms import network_norm_kind
        from normbench.run.checkpointing import (
            best_checkpoint,
            check_checkpoint,
            checkpoint_callbacks,
            resume_checkpoint,
            silence_mid_epoch_resume_warning,
        )
        from normbench.run.loggers import build_logger, log_final

    trainer_options = trainer_config(cfg.trainer)  # a GPU config on a machine without one stops here
    identity = run_identity(cfg, summary)
    ckpt_path = resume_checkpoint(run_dir, cfg.resume, cfg.ckpt_path)
    if ckpt_path is not None:
        check_checkpoint(ckpt_path, identity)
        silence_mid_epoch_resume_warning()

    set_threads(cfg.get("threads"))
    check_before_data(identity["norm_config"], identity["model_config"])  # a bad option or class: refused at once
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with timed(timings, "data"):
        datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    module.run_identity = identity

    run_name = "-".join(f"{summary[k]}" for k in ("model", "norm")) + f"-bs{summary['batch_size']}-s{cfg.seed}"
    tags = [f"{k}={summary[k]}" for k in ("model", "norm", "data", "batch_size", "seed")]
    tags = list(dict.fromkeys([*tags, *override_tags(), *cfg.tags]))
    config = {**OmegaConf.to_container(cfg, resolve=True), "choices": _choices()}  # choices: W&B groups by them
    sweep_dir = Path(HydraConfig.get().sweep.dir) if HydraConfig.get().mode == RunMode.MULTIRUN else None
    with timed(timings, "logger"):
        logger = build_logger(cfg.get("logger"), run_dir, run_name, tags, config, cfg.resume, sweep_dir)
    with instantiating("callbacks"):
        instruments = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    stopper = early_stopping_callback(cfg.get("early_stopping"), module.monitor)
    checkpoints = checkpoint_callbacks(
        run_dir, cfg.checkpoint.every_n_steps, cfg.checkpoint.save_best, module.monitor, keep_best=stopper is not None
    )
    step_timer = StepTimer()
    bar = not jobs_side_by_side()  # bars of jobs run side by side interleave; the sweep's progress line stays
    callbacks = [*([RichProgressBar()] if bar else []), step_timer, *instruments, *checkpoints]
    callbacks += [stopper] if stopper else []
    callbacks += [LearningRateMonitor("step")] if logger else []
    with instantiating("trainer"):
        trainer = instantiate(
            trainer_options,
            default_root_dir=str(run_dir),
            logger=logger if logger else False,
            callbacks=callbacks,
            enable_checkpointing=bool(checkpoints),
            enable_progress_bar=bar,
        )
    with timed(timings, "fit"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    final_logged = logged_instruments(trainer)
    epochs = trainer.current_epoch
    # read before validate(ckpt_path=best) restores the callbacks' state of the best epoch
    stopping = (
        None if stopper is None else {"stopped_epoch": stopper.stopped_epoch, "best_score": float(stopper.best_score)}
    )
    # with early stopping the best checkpoint is evaluated (validate loads it into the module for what follows)
    best = best_checkpoint(checkpoints) if stopper is not None else None
    best_path = best.best_model_path if best is not None and best.best_model_path else None
    metrics: dict[str, float] = {}
    with timed(timings, "eval"):
        validated = trainer.validate(module, datamodule, ckpt_path=best_path, verbose=False, weights_only=True)
        if best_path:  # the validation instruments' values: those of the evaluated weights; the training-time
            final_logged |= logged_instruments(trainer)  # ones (fluctuation) keep their last value in training
        for results in (
            validated,
            trainer.test(module, datamodule, ckpt_path=best_path, verbose=False, weights_only=True),
        ):
            metrics.update({k: float(v) for k, v in results[0].items()})
        evaluate = cfg.get("evaluate") or {}
        extra, notes = extra_evaluations(
            module, datamodule, evaluate.get("lengths"), evaluate.get("batch_sizes"), evaluate.get("pad_to")
        )
    metrics.update(extra)
    log_final(logger, {**final_logged, **metrics})  # W&B's summary: results.json's numbers
    series = {name: points for cb in instruments if isinstance(cb, Instrument) for name, points in cb.series.items()}
    return {
        "metrics": metrics,
        "instruments": final_logged,
        "series": series,
        "evaluation_notes": notes,
        # ddp_spawn trains in spawned processes: this one's step counter stays 0, so the count is unknown here
        "global_step": None if _trained_in_spawned_processes(trainer) else trainer.global_step,
        "train_step_s": step_timer.median(),  # median wall seconds of a training step
        "world_size": trainer.world_size,  # processes; the global batch is world_size x data.batch_size
        "epochs": epochs,
        "early_stopping": None if stopping is None else {**stopping, "best": best_path},
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "num_params": sum(p.numel() for p in module.parameters()),
        "norm_kind": network_norm_kind(module),  # the report's batch / token / none split (normbench.norm_kinds)
        "data_stats": datamodule.stats(),
    }


def _format_summary(record: dict[str, Any]) -> str:
    m = record.get("metrics", {})
    shown = ("val/bpc", "val/ppl", "test/bpc", "test/ppl") if "val/ppl" in m else ("val/acc", "test/acc")
    accuracy = " ".join(f"{k}={m[k]:.4f}" for k in shown if k in m)
    return (
        f"normbench: model={record['model']} norm={record['norm']} batch_size={record['batch_size']} "
        f"{accuracy} wall={record['wall_time_s']:.1f}s dir={record['output_dir']}"
    )


def task(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job. Writes ``results.json`` whether the run succeeds or fails, so nothing is lost."""
    start = time.perf_counter()
    timings: dict[str, float] = {}  # wall seconds per phase; imports are paid by a process's first job only
    with timed(timings, "imports"):
        from normbench.run.loggers import finish_wandb

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run_summary(cfg)
    finished = _finished_record(run_dir) if cfg.resume else None
    if finished is not None:  # resuming a sweep: jobs that completed keep their results
        print(f"{_format_summary(finished)} (finished earlier; resume=true keeps it)", flush=True)
        return finished
    record: dict[str, Any] = {"status": "running", **summary, "output_dir": str(run_dir)}
    try:
        validate_config(OmegaConf.to_container(cfg, resolve=True))  # every value, before anything is built
        with ddp_job(cfg.trainer):
            record.update(fit_and_evaluate(cfg, run_dir, summary, timings))
        check_earned(record)  # zero steps or a non-finite metric: a failed run, whatever callbacks are on
        record["status"] = "ok"
    except BaseException as err:
        record.update(status="failed", error=one_line(user_error(err) or err))
        raise
    finally:
        with timed(timings, "logger_finish"):
            finish_wandb()
        record["timings"] = timings
        record["wall_time_s"] = round(time.perf_counter() - start, 3)
        record.update(
            config=OmegaConf.to_container(cfg, resolve=True),
            versions=library_versions(),
            git_commit=git_commit(DEFAULT_CONFIG_DIR.parent),
        )
        if is_global_zero():  # under DDP the other processes of the job write nothing
            write_json_atomic(run_dir / RESULTS_FILE, record)
    if is_global_zero():
        print(_format_summary(record), flush=True)
    return record


def _finished_record(run_dir: Path) -> dict[str, Any] | None:
    record = read_results(run_dir)
    return record if record is not None and record.get("status") == "ok" else None


def _task_reporting_user_errors(cfg: DictConfig) -> dict[str, Any] | None:
    """A user error ends a single run with one line on stderr and exit code 2, not a stack trace.

    In a multirun the failed job's line goes to stdout and the sweep goes on with the other jobs; its
    results.json records the error, and `normbench.cli.hydra_callbacks.SweepFailures` fails the sweep at
    the end with one line listing the failed jobs.
    """
    if HydraConfig.get().mode == RunMode.MULTIRUN and os.environ.get("HYDRA_FULL_ERROR") != "1":
        try:
            return task(cfg)
        except Exception as err:
            shown = user_error(err)
            if shown is None:
                raise
            print(f"normbench: job failed: {shown}", flush=True)
            return None
    with user_errors_as_one_line():
        return task(cfg)


def main(config_dir: str | os.PathLike | None = None) -> None:
    """``python train.py [overrides]``: Hydra's CLI (``-m`` for sweeps, ``--cfg job`` to print the config)."""
    config_path = str(Path(config_dir or os.environ.get("NORMBENCH_CONFIG_DIR") or DEFAULT_CONFIG_DIR).resolve())
    with user_errors_as_one_line():
        check_group_choices(sys.argv[1:], Path(config_path))
        register_schemas(config_path)  # the constructors' defaults, which the config files leave out
        check_override_keys(sys.argv[1:], Path(config_path))
    hydra.main(version_base="1.3", config_path=config_path, config_name="train")(_task_reporting_user_errors)()


if __name__ == "__main__":
    main()
