"""Runs the original Skip-WGANomaly code in a process of its own and records what it computes."""
