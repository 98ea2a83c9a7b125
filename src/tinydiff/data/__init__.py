"""Datasets: fetching real data (fetch.py) and loading anything as uint8 tensors (datasets.py)."""

from .datasets import ImageData, load_dataset

__all__ = ["ImageData", "load_dataset"]
