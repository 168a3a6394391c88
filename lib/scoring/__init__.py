"""Everything between a trained model and a decision: measurements, score functions and their
fitted statistics (functions.py), the per-image measurements themselves (measures.py)."""
