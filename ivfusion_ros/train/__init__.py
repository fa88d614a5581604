"""Training fusion networks: paired image folders, unsupervised losses, checkpoints, validation metrics.

``ivfusion train`` is the command; :func:`~ivfusion_ros.train.trainer.train` the library entry point.
"""

from ivfusion_ros.train.data import PairSet, load_pairs
from ivfusion_ros.train.trainer import CSV_COLUMNS, TrainConfig, TrainResult, csv_columns, train

__all__ = ["CSV_COLUMNS", "PairSet", "TrainConfig", "TrainResult", "csv_columns", "load_pairs", "train"]
