"""Dataset loaders. Every loader returns the same `Dataset` shape."""
from recsys.data.dataset import Dataset
from recsys.data.movielens import load_dataset, load_ml_100k, load_ml_latest_small

__all__ = ["Dataset", "load_dataset", "load_ml_100k", "load_ml_latest_small"]
