"""Several processes: torch.distributed for one run, and the launcher that starts them."""
