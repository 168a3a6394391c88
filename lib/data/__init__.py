"""Datasets: the built-in ones, image folders and inspection data with masks, read into uint8 tensors and split."""
