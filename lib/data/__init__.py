"""Datasets: the built-in ones and image folders, read into uint8 tensors and split."""
