"""Run folders: setting a run up, its folder and lock, the checkpoint options it adopts, results tables."""
