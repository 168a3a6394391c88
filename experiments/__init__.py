"""Class sweeps (run_*.sh) and studies, run from the repository root: `python -m experiments.fmnist_study`,
`python -m experiments.epoch_speed`."""
