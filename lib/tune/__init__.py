"""Ray Tune searches: the space, its checks, trials, ranks, interrupts, the cluster and the report."""
