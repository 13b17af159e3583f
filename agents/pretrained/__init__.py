"""The pretrained RL-MBA selection policy shipped with the package.

``rl_mba.pt`` is a :class:`agents.reinforce.ReinforceAgent` checkpoint over the dataset-agnostic
observation (layout v2), so it plays any rlmba env whatever its number of modalities, classes
or feature dimensions. It is margin sampling cloned into the set scorer over the portfolio
candidates of the whole development suite, AV-Digits and Synthetic (margin had the best mean
normalised AULC over the suite; see the README's leave-one-dataset-out section), with no
policy-gradient steps yet. :func:`load_pretrained` checks the file's sha256 against
:data:`POLICY_SHA256` before loading it; :data:`TRAIN_COMMAND` is the command that made it.
In ``agents/evaluate.py`` it is the agent ``rl-mba`` (greedy, frozen) and ``rl-mba:online``
(a fresh copy per campaign keeps learning during it, as in the paper).
"""

from __future__ import annotations

from pathlib import Path

from rlmba_env.data.cache import file_sha256

POLICY_FILE = Path(__file__).resolve().parent / "rl_mba.pt"
POLICY_SHA256 = "d18b7005a8adc3ca4a3b23b6f12f2864811e3bd5e3faa02db39d9b588f800305"
TRAIN_COMMAND = (
    "python agents/train_pg.py --suite RLMBA-AVDigits-v0 RLMBA-Synthetic-v0 RLMBA-DevSuite-v0:leaves"
    "100 RLMBA-DevSuite-v0:bbcsport RLMBA-DevSuite-v0:mnist4 RLMBA-DevSuite-v0:msrc RLMBA-DevSuite-v"
    "0:movies RLMBA-DevSuite-v0:prokaryotic RLMBA-DevSuite-v0:proteinfold RLMBA-DevSuite-v0:reuters1"
    "200 RLMBA-DevSuite-v0:webkb --bc-teacher margin_rank --bc-episodes 1 --total-timesteps 0 --eval-episodes 0 --seed 1 --torch-threads 1 && cp runs/RLMBA-AVDigits-v0__reinforce__1__*/agent.pt agents/pretrained/rl_mba.pt"
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
