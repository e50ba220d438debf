"""Datasets: loaders for the official file formats, window sampling and flips."""
