"""rlmba: multimodal active learning as a Gymnasium environment (RL-MBA, arXiv 2603.25107).

Importing the package registers the env ids ``RLMBA-AVDigits-v0``, ``RLMBA-Synthetic-v0``,
``RLMBA-Features-v0``, ``RLMBA-DevSuite-v0``, ``RLMBA-Food101-v0``, ``RLMBA-KineticsSound-v0`` and
``RLMBA-VGGSound-v0`` with Gymnasium.
"""

import importlib.metadata

from rlmba_env.data.dataset import DatasetError, MultimodalDataset
from rlmba_env.env import MultimodalALEnv
from rlmba_env.protocols import PROTOCOLS, Protocol
from rlmba_env.registration import ENV_IDS, register_envs

register_envs()

__all__ = ["DatasetError", "MultimodalDataset", "MultimodalALEnv", "PROTOCOLS", "Protocol", "ENV_IDS"]
__version__ = importlib.metadata.version("rlmba")  # setup.cfg's, the one source
