"""The one training loop every model uses, its state, schedules, outputs and checkpoints."""
