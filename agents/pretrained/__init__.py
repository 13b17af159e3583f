"""The pretrained RL-MBA selection policy shipped with the package.

``rl_mba.pt`` is a :class:`agents.reinforce.ReinforceAgent` checkpoint over the dataset-agnostic
observation (layout v2), so it plays any rlmba env whatever its number of modalities, classes
or feature dimensions. It is the linear candidate score ``margin_rank + 0.1 score_rank``
(margin sampling within the portfolio candidates, with a small weight on the rank of the score
q; a :class:`~agents.networks.BilinearScorer` with no state terms): the choice of the
direct policy search of :mod:`agents.policy_search` over the whole development suite and
AV-Digits (``benchmarks/lodo.py --stage search`` then ``--stage ship``; seven of the nine
leave-one-dataset-out folds chose the same rule; see the README's "One policy for datasets it
has never seen"). :func:`load_pretrained` checks the file's sha256 against
:data:`POLICY_SHA256` before loading it; :data:`TRAIN_COMMAND` is the command that made it (with
the learner of commit bec1ba7, exp evidence without the KL term; the same code writes the same file byte
for byte; another learner may lead the search to another rule).
In ``agents/evaluate.py`` it is the agent ``rl-mba`` (greedy, frozen) and ``rl-mba:online``
(a fresh copy per campaign keeps learning during it, as in the paper).
"""

from __future__ import annotations

from pathlib import Path

from rlmba_env.data.cache import file_sha256

POLICY_FILE = Path(__file__).resolve().parent / "rl_mba.pt"
POLICY_SHA256 = "05d215aeb05ad6d7bbecdbf208d951116049a04d8998484707e3be31df13f8d4"
TRAIN_COMMAND = (
    "python benchmarks/lodo.py --stage search --out-dir runs/lodo_search --extra RLMBA-AVDigits-v0 --method search"
    " && python benchmarks/lodo.py --stage ship --out-dir runs/lodo_search --extra RLMBA-AVDigits-v0 --method search"
    " && cp runs/lodo_search/policies/all-datasets.pt agents/pretrained/rl_mba.pt"
)


def load_pretrained(device: str = "cpu", path: str | Path | None = None, expected_sha256: str | None = None):
    """The shipped policy as a ReinforceAgent, after checking its sha256.

    Raises:
        FileNotFoundError: the file is missing. ValueError: its hash differs (the message names
        both hashes and the command that retrains it).
    """
    from agents.reinforce import ReinforceAgent

    path = Path(path) if path is not None else POLICY_FILE
    expected = POLICY_SHA256 if expected_sha256 is None else expected_sha256
    if not path.is_file():
        raise FileNotFoundError(f"the pretrained policy {path} is missing; retrain it with: {TRAIN_COMMAND}")
    found = file_sha256(path)
    if found != expected:
        raise ValueError(f"the pretrained policy {path} has sha256 {found}, expected {expected}; "
                         f"retrain it with: {TRAIN_COMMAND} (and update POLICY_SHA256 in {__name__})")
    return ReinforceAgent.load(path, device)
