"""Datasets: one in-memory type, one cache format, many sources."""

from rlmba_env.data.cache import default_data_root, save_dataset
from rlmba_env.data.dataset import DatasetError, MultimodalDataset, load_dataset
from rlmba_env.data.synthetic import make_synthetic

__all__ = ["DatasetError", "MultimodalDataset", "default_data_root", "load_dataset", "save_dataset",
           "make_synthetic"]
