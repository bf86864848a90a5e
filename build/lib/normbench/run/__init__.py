"""The run: one training job from its config to results.json (Hydra entry, LightningModules, checkpoints, loggers)."""
