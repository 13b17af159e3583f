"""The env's side of labeling real data (:mod:`rlmba_env.labeling`): unlabeled rows, resuming.

A labeling project's dataset holds pool rows whose label is not known yet (-1, see
:data:`rlmba_env.data.dataset.UNLABELED`). The env simulates labeling from known labels, so it
refuses such rows in ``val`` and ``test`` and refuses to label or train on one. Since the labels
come from annotators round by round, the project rebuilds the env at the current round
(:meth:`ResumeMixin.resume`) instead of stepping it, and asks a policy for a round's picks
without closing the round (:meth:`ResumeMixin.pick_rows`). RL-MBA (arXiv 2603.25107) itself
has no such loop; the round's computations are the env's, unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from rlmba_env.data.dataset import UNLABELED, MultimodalDataset

if TYPE_CHECKING:
    from rlmba_env.learner.trainer import FitRequest

LABEL_HINT = "label unlabeled data with rlmba_env.labeling (`rlmba label`)"
"""where an error about an unlabeled row (-1) sends the user"""


def check_rows_labeled(dataset: MultimodalDataset, rows) -> None:
    """One ValueError when one of ``rows`` has no label (-1, data for :mod:`rlmba_env.labeling`):
    the env simulates labeling from known labels, it cannot label such a row."""
    rows = np.asarray(rows, dtype=np.int64)
    unknown = rows[dataset.labels[rows] == UNLABELED]
    if unknown.size:
        raise ValueError(f"row {int(unknown[0])} has no label (-1) in dataset {dataset.name!r}: the env "
                         f"simulates labeling from known labels; {LABEL_HINT}")


def check_splits_labeled(dataset: MultimodalDataset) -> None:
    """The env measures its model on ``val`` (reward, AMCB) and ``test``: one ValueError when
    ``val`` is empty or a ``val`` or ``test`` row has no label."""
    if len(dataset.splits["val"]) == 0:
        raise ValueError(f"dataset {dataset.name!r} has an empty val split; the env needs labeled val rows "
                         f"for its metrics, AMCB weights and reward ({LABEL_HINT})")
    for split in ("val", "test"):
        rows = dataset.splits[split]
        unknown = rows[dataset.labels[rows] == UNLABELED]
        if unknown.size:
            raise ValueError(
                f"dataset {dataset.name!r}: {split} row {int(unknown[0])} has no label (-1; {unknown.size} "
                f"such rows): the env measures its model on val and test, so every row there needs a "
                f"label ({LABEL_HINT})")


class ResumeMixin:
    """``resume`` and ``pick_rows`` of :class:`~rlmba_env.env.MultimodalALEnv`."""

    def begin_resume(self, episode_seed: int, rounds_done: int, labeled_rows: Sequence[int],
                     weights: Sequence[float] | None = None, held_rows: Sequence[int] = ()) -> FitRequest:
        """:meth:`resume` up to the fit; :meth:`finish` then returns ``(obs, info)``."""
        if not 0 <= rounds_done <= self.protocol.rounds:
            raise ValueError(f"rounds_done must be in [0, {self.protocol.rounds}], got {rounds_done}")
        # the initial draw replays reset's, whatever its rows' labels: labeled_rows replace them
        self._start_episode({"episode_seed": episode_seed})
        for _ in range(2 * rounds_done):  # the fit and k-means seeds of the closed rounds
            self._draw_seed()
        rows = np.asarray(labeled_rows, dtype=np.int64)
        check_rows_labeled(self.dataset, rows)
        self._labeled[:] = False
        self._labeled[rows] = True
        self._n_labeled = int(rows.size)
        self._held[np.asarray(held_rows, dtype=np.int64)] = True
        self._round = int(rounds_done)
        if weights is not None:
            self._weights = torch.tensor(list(weights), dtype=torch.float32, device=self.device)
        return self._fit_request()

    def resume(self, episode_seed: int, rounds_done: int, labeled_rows: Sequence[int],
               weights: Sequence[float] | None = None, held_rows: Sequence[int] = ()):
        """Start at round ``rounds_done`` of episode ``episode_seed`` with ``labeled_rows`` labeled.

        The labeling loop's way in (:class:`rlmba_env.labeling.LabelingProject`): the episode's
        random draws are replayed up to this round (the initial draw, the learner's reset seed,
        two seeds per closed round), ``weights`` are the AMCB weights the previous round ended
        with (None: equal, as at reset), then the learner is trained and the pool scored exactly
        as in the env's own round ``rounds_done`` when the same rows are labeled. ``held_rows``
        (unlabeled rows already proposed to annotators) are left out of the candidates and of
        :meth:`pool_state`. Returns ``(obs, info)`` like :meth:`reset`.
        """
        return self._fit_and_finish(self.begin_resume(episode_seed, rounds_done, labeled_rows, weights, held_rows))

    def pick_rows(self, act: Callable[[dict], int]) -> np.ndarray:
        """The ``per_round`` dataset rows a policy picks this round, without closing the round.

        ``act(obs) -> int`` is called once per pick with the observation :meth:`step` would
        return (candidate picked flags and coverage updated after each pick); the picks are
        then undone, so the round can be closed with :meth:`label` or the rows sent to
        annotators. Raises ``ValueError`` on a masked pick, as :meth:`step` does.
        """
        self._require_running()
        if self._picks:
            raise RuntimeError(f"{len(self._picks)} candidate(s) already picked this round through step()")
        view, self._view = self._view, copy.deepcopy(self._view)  # the picks change the copy only
        try:
            for _ in range(min(self.budget, view.rows.shape[0])):
                self._picks.append(self._view.pick(act(self.observation()), self._picked))
            return view.rows[self._picks].copy()
        finally:
            self._clear_picks()
            self._view = view
