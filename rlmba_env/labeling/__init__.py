"""Labeling your own data: the RL-MBA loop with annotators, over a crash-safe SQLite label store.

``LabelingProject`` (:mod:`rlmba_env.labeling.project`) is the Python API behind
``rlmba label {init,next,import,status,export,backup}``; :mod:`rlmba_env.labeling.store` is
the store, :mod:`rlmba_env.labeling.answers` reads CSV and Label Studio answers.
"""

from rlmba_env.labeling.answers import AnswerFileError
from rlmba_env.labeling.project import (
    Batch,
    Chooser,
    ImportReport,
    LabelingError,
    LabelingProject,
    PolicyChooser,
    ProjectConfig,
    StrategyChooser,
    episode_seed,
)
from rlmba_env.labeling.store import LabelStore, StoreError

__all__ = ["AnswerFileError", "Batch", "Chooser", "ImportReport", "LabelStore", "LabelingError",
           "LabelingProject", "PolicyChooser", "ProjectConfig", "StoreError", "StrategyChooser", "episode_seed"]
