"""Everything between a trained model and a decision.

- measures.py: per-image measurements (image errors, SSIM, feature error), pure torch functions;
  a model's `outputs` computes those its score needs.
- functions.py: score functions of the measurements, their statistics fitted on normal images,
  the choice among them on validation labels (no torch: the command line reads the names).
- evaluate.py: measuring images in batches, fitting and choosing the score before an
  evaluation, a split's metrics and the thresholds stored for predict.py.
- located.py: each score's per-location map; pixel.py: pixel AUROC and PRO of maps against masks;
  localise.py: the maps of inspection data evaluated against their masks, their smoothing chosen
  on validation.
"""
