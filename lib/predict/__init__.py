"""Scoring new images with a trained run: images in, scores, decisions and maps out."""
