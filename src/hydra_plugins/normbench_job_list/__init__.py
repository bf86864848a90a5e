"""normbench's Hydra sweeper over an explicit list of jobs (Hydra finds plugins in the hydra_plugins package)."""
