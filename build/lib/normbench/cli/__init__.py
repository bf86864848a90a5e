"""The command line's plumbing: config-group choices, job dir names, Hydra callbacks, sweep progress."""
