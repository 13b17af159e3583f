"""Many RL-MBA environments on one device, their classifiers trained as one batched model.

:class:`BatchedMultimodalALVectorEnv` runs ``n_envs`` copies of
:class:`~rlmba_env.env.MultimodalALEnv` (arXiv 2603.25107) on one dataset and device. Each
sub-env keeps its own labeled set, episode RNG, modality weights and learner, exactly as a
single env; what is shared is the work. When sub-envs close a round (or reset) on the same
step, their evidential classifiers are trained together: the per-modality MLP parameters of all
of them are stacked along a leading env axis and trained with batched matrix products
(``torch.baddbmm``) and one Adam step for all envs, and the whole dataset is inferred for all
of them with one matrix product per chunk. Adam is elementwise and the per-env losses are
summed, so each env's parameters follow exactly its own gradient; on the CPU each env's
initialisation, dropout masks and minibatch order are drawn from a generator holding exactly
the state a single env would use, so a sub-env replays the single env with the same seed
(tests/test_vector.py checks labeled sets and accuracies against ``MultimodalALEnv``). On CUDA
the dropout masks are drawn with ``bernoulli_`` from each env's own generator, not with
PyTorch's fused dropout kernel: statistically the same training, not the same bits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array
from torch import Tensor

from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.env import MultimodalALEnv
from rlmba_env.learner.evidential import fuse, kl_to_uniform_dirichlet
from rlmba_env.learner.trainer import EvidentialLearner, FitStats, first_layer
from rlmba_env.protocols import Protocol
from rlmba_env.seeding import forked_torch_rng


def _edl_rows(alpha: Tensor, targets: Tensor, kl_coef: float) -> Tensor:
    """Per-row terms of :func:`~rlmba_env.learner.evidential.edl_loss` (its mean over rows is
    the loss), for opinions of any leading shape ``(..., K)``; same arithmetic."""
    s = alpha.sum(-1)
    alpha_true = alpha.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    nll_term = torch.digamma(s) - torch.digamma(alpha_true)
    if kl_coef == 0:
        return nll_term
    y = F.one_hot(targets, alpha.shape[-1]).to(alpha.dtype)
    alpha_tilde = y + (1.0 - y) * alpha
    return nll_term + kl_coef * kl_to_uniform_dirichlet(alpha_tilde)


def _device_rng_state(device: torch.device) -> Tensor:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _batched_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.linear`` per env: ``x`` (n, B, in), ``weight`` (n, out, in), ``bias`` (n, out)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class BatchedEvidentialLearner:
    """Fits and infers the :class:`~rlmba_env.learner.trainer.EvidentialLearner` of several envs
    as one model with stacked parameters, on their common device.

    The learners must share configuration, feature dimensions and device (sub-envs of one
    :class:`BatchedMultimodalALVectorEnv` do). Parameters live in each learner's network
    between fits; a fit stacks them, trains, and writes them back, so every learner stays a
    complete, usable learner (strategies, ``state_dict``).
    """

    def __init__(self, learners: Sequence[EvidentialLearner]):
        self.learners = list(learners)
        first = self.learners[0]
        self.config, self.device, self.modalities = first.config, first.device, first.modalities
        if not first._stock_net():
            raise ValueError("batched training needs the stock MultimodalEvidentialNet")

    def _param_names(self) -> list[str]:
        return [name for name, _ in self.learners[0].net.named_parameters()]

    # -- training ---------------------------------------------------------------------------
    def fit(self, members: Sequence[int], features: dict[str, Tensor], labels: Tensor,
            indices: Sequence[Tensor], weights: Sequence[Tensor], seeds: Sequence[int]) -> list[FitStats]:
        """Fit the learners at positions ``members``, each on its own rows, weights and seed,
        as :meth:`EvidentialLearner.fit` would; returns their :class:`FitStats` in order."""
        start = time.perf_counter()
        stats: list[FitStats | None] = [None] * len(members)
        groups: dict[tuple, list[int]] = {}
        for j, e in enumerate(members):
            learner = self.learners[e]
            cold = not (self.config.warm_start and learner._fitted)
            key = (cold, 0 if cold else learner._epochs_done, int(torch.as_tensor(indices[j]).numel()))
            groups.setdefault(key, []).append(j)
        for (cold, _, _), js in groups.items():
            for j, s in zip(js, self._fit_group([members[j] for j in js], cold, features, labels,
                                                [indices[j] for j in js], [weights[j] for j in js],
                                                [seeds[j] for j in js])):
                stats[j] = s
        seconds = time.perf_counter() - start
        for s in stats:
            s.seconds = seconds
        return stats

    def _fit_group(self, members: list[int], cold: bool, features: dict[str, Tensor], labels: Tensor,
                   indices: list[Tensor], weights: list[Tensor], seeds: list[int]) -> list[FitStats]:
        cfg, device = self.config, self.device
        learners = [self.learners[e] for e in members]
        n_env = len(learners)
        idx = torch.stack([learners[0]._as_index(i) for i in indices])  # (n, L)
        if idx.shape[1] == 0:
            raise ValueError("fit() got no labeled rows (indices is empty)")
        y = labels[idx].to(device, torch.long)
        w = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(device) for v in weights])  # (n, M)
        n = idx.shape[1]
        batch = n if cfg.batch_size is None else min(cfg.batch_size, n)

        # Initialisation exactly as EvidentialLearner.fit, then each env's RNG state after it.
        generators = []
        for learner, seed in zip(learners, seeds):
            with forked_torch_rng(device, seed):
                if cold:
                    learner._init_parameters()
                    if learners[0]._stats_of is not None and learner._stats_of is None:
                        learner._stats_of, learner._stats = learners[0]._stats_of, learners[0]._stats
                    learner._set_input_stats(features)
                    learner._epochs_done = 0
                g = torch.Generator(device=device)
                g.set_state(_device_rng_state(device))
                generators.append(g)
        net0 = learners[0].net
        x = {}
        for i, m in enumerate(self.modalities):
            mean, std = getattr(net0, f"input_mean_{i}"), getattr(net0, f"input_std_{i}")
            x[m] = (features[m][idx].float() - mean) / std  # (n, L, d_m), as the single fit
        epochs = cfg.epochs if cold else cfg.warm_epochs
        epochs_done = learners[0]._epochs_done

        names = self._param_names()
        params = {name: torch.stack([dict(l.net.named_parameters())[name].detach() for l in learners]).clone()
                  .requires_grad_(True) for name in names}
        optimizer = torch.optim.Adam(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        p_drop = float(net0.encoders[0][2].p)
        losses = torch.zeros(n_env, epochs, device=device)
        grad_norms = torch.zeros(n_env, device=device)
        env_axis = torch.arange(n_env, device=device)[:, None]
        for epoch in range(epochs):
            t = epochs_done + epoch
            kl_coef = 1.0 if cfg.kl_anneal_epochs <= 0 else min(1.0, t / cfg.kl_anneal_epochs)
            orders = (torch.stack([torch.randperm(n, device=device, generator=g) for g in generators])
                      if batch < n else None)
            for lo in range(0, n, batch):
                if orders is None:
                    xb, yb = x, y
                else:
                    rows = orders[:, lo : lo + batch]
                    xb = {m: v[env_axis, rows] for m, v in x.items()}
                    yb = y[env_axis, rows]
                loss_env = self._loss(params, xb, yb, w, kl_coef, generators, p_drop)  # (n,)
                optimizer.zero_grad(set_to_none=True)
                loss_env.sum().backward()
                optimizer.step()
                losses[:, epoch] += loss_env.detach() * (yb.shape[1] / n)
            if epoch == epochs - 1:
                # per env, in the order of net.parameters(), as the single fit
                grad_norms = torch.stack([
                    torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(params[name].grad[e]) for name in names]))
                    for e in range(n_env)
                ])
        with torch.no_grad():
            for e, learner in enumerate(learners):
                for name, p in learner.net.named_parameters():
                    p.copy_(params[name][e])
                learner._epochs_done += epochs
                learner._fitted = True
        loss_rows, norms = losses.tolist(), grad_norms.tolist()  # one transfer each, after the loop
        return [FitStats(losses=loss_rows[e], grad_norm=norms[e], epochs=epochs) for e in range(n_env)]

    def _loss(self, params: dict[str, Tensor], x: dict[str, Tensor], y: Tensor, w: Tensor, kl_coef: float,
              generators: list[torch.Generator], p_drop: float) -> Tensor:
        """Per-env EDL loss ``(n,)``, each equal to the single learner's ``_loss``."""
        n_env, batch = y.shape
        masks = {}
        if p_drop > 0:
            hidden = params["heads.0.weight"].shape[2]
            for g in generators:  # per env, modality by modality: the single forward's draw order
                for i in range(len(self.modalities)):
                    masks.setdefault(i, []).append(
                        torch.empty(batch, hidden, device=self.device).bernoulli_(1 - p_drop, generator=g).div_(1 - p_drop))
        alphas = []
        for i, m in enumerate(self.modalities):
            h = _batched_linear(x[m], params[f"encoders.{i}.0.weight"], params[f"encoders.{i}.0.bias"]).relu()
            if p_drop > 0:
                h = h * torch.stack(masks[i])
            logits = _batched_linear(h, params[f"heads.{i}.weight"], params[f"heads.{i}.bias"])
            alphas.append(F.softplus(logits) + 1.0)
        alphas = torch.stack(alphas)  # (M, n, B, K)
        loss = sum(_edl_rows(alphas[i], y, kl_coef).mean(-1) for i in range(alphas.shape[0]))
        if self.config.fused_loss_weight:
            if self.config.fusion == "efda":
                fused = 1.0 + (w.T[:, :, None, None] * (alphas - 1.0)).sum(0)
            else:
                fused = torch.stack([fuse(alphas[:, e], w[e], self.config.fusion) for e in range(n_env)])
            loss = loss + self.config.fused_loss_weight * _edl_rows(fused, y, kl_coef).mean(-1)
        return loss

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_all(self, members: Sequence[int], features: dict[str, Tensor],
                    batch_size: int = 65536) -> Tensor:
        """Opinions ``(n, M, N, K)`` of the learners at ``members`` on every dataset row: per
        chunk of rows, one matrix product for the first layer of all of them (their
        standardisation folded in, as :meth:`EvidentialLearner.predict`), one batched product
        for the heads."""
        layers = [self.learners[e]._inference_layers() for e in members]
        n_env = len(members)
        n_rows = next(iter(features.values())).shape[0]
        out = torch.empty(n_env, len(self.modalities), n_rows, self.learners[0].n_classes, device=self.device)
        for i, m in enumerate(self.modalities):
            w1 = torch.cat([lay[i][0] for lay in layers])  # (n * H, d)
            b1 = torch.cat([lay[i][1] for lay in layers])
            centre = layers[0][i][2]  # the input statistics are shared by the envs
            w2 = torch.stack([lay[i][3] for lay in layers])  # (n, K, H)
            b2 = torch.stack([lay[i][4] for lay in layers])
            hidden = w2.shape[2]
            for lo in range(0, n_rows, batch_size):
                xc = features[m][lo : lo + batch_size]
                h = first_layer(xc, w1, b1, centre).view(xc.shape[0], n_env, hidden).transpose(0, 1)
                out[:, i, lo : lo + batch_size] = F.softplus(_batched_linear(h, w2, b2)).add_(1.0)
        for e in members:
            self.learners[e].net.eval()
        return out


class BatchedMultimodalALVectorEnv(VectorEnv):
    """
    ## Description

    ``n_envs`` independent RL-MBA campaigns (:class:`~rlmba_env.env.MultimodalALEnv`) on one
    dataset and one device, as a Gymnasium 1.x vector env. The sub-envs' classifiers are
    trained as one batched model whenever several of them close a round (or reset) on the same
    step, which is every step in lockstep play; everything else (AMCB, EFDA, k-means, the
    candidate set, rewards) runs per env on the shared device data. Built for many envs on
    one GPU; on a CPU it still saves the per-operation overhead of small fits.

    ## Action Space

    ``MultiDiscrete([K] * n_envs)``: one candidate position per sub-env (``batch_space`` of
    the single env's ``Discrete(K)``).

    ## Observation Space

    The single env's ``Dict`` batched: ``candidates`` ``(n_envs, K, 2M + 7)``, ``state``
    ``(n_envs, 3M + 10)``, ``action_mask`` ``(n_envs, K)``; see ``MultimodalALEnv``.
    :meth:`action_masks` returns the ``(n_envs, K)`` boolean masks (sb3-contrib).

    ## Rewards

    Per sub-env, as the single env.

    ## Starting State

    ``reset(seed=s)`` seeds sub-env i with ``s + i`` (a list gives one seed per env; None draws
    fresh seeds), exactly as :class:`gymnasium.vector.SyncVectorEnv`; sub-env i then replays
    ``MultimodalALEnv.reset(seed=s + i)``. ``options={"reset_mask": mask}`` resets only the
    masked envs.

    ## Episode End

    Next-step autoreset (``metadata["autoreset_mode"] = AutoresetMode.NEXT_STEP``, the
    Gymnasium 1.x default): the step that ends a sub-env's episode returns its last
    observation with ``terminated`` True; on the following step that sub-env's action is
    ignored, it is reset, and it returns its first observation with reward 0 and
    ``terminated`` and ``truncated`` False.

    ## Arguments

    - ``dataset``, ``protocol``: as ``MultimodalALEnv``.
    - ``n_envs``: number of sub-envs.
    - every other keyword: ``MultimodalALEnv``'s (``learner``, ``reward``, ``device``, ...),
      the same for all sub-envs. ``render_mode`` is not supported.

    :meth:`from_env_id` builds one from a registered id (``"RLMBA-AVDigits-v0"``).
    Infos are batched with Gymnasium's ``_key`` masks; ``candidate_rows`` is padded with -1
    to K entries when fewer unlabeled rows are left. The sub-envs are in :attr:`envs`
    (``envs[i].pool_state()``, ``envs[i].label(...)`` are theirs); call ``label`` only through
    a sub-env that is mid-episode, as on the single env.

    ## Version History

    - v0: initial release.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, dataset: MultimodalDataset, protocol: Protocol | dict, n_envs: int, **env_kwargs):
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        if env_kwargs.get("render_mode") is not None:
            raise ValueError("BatchedMultimodalALVectorEnv does not render; leave render_mode None")
        # The sub-envs share the dataset's device arrays (rlmba_env.env.device_data).
        super().__init__()
        self.envs = [MultimodalALEnv(dataset, protocol, **env_kwargs) for _ in range(n_envs)]
        self.num_envs = n_envs
        self.metadata = dict(self.metadata)
        self.render_mode = None
        first = self.envs[0]
        self.device = first.device
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, n_envs)
        self.action_space = batch_space(spaces.Discrete(first.n_candidates), n_envs)
        self.learner = BatchedEvidentialLearner([env.learner for env in self.envs])
        self._autoreset = np.zeros(n_envs, dtype=bool)
        self._started = False
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_env_id(cls, env_id: str, n_envs: int, **kwargs) -> "BatchedMultimodalALVectorEnv":
        """The registered env ``env_id`` built with ``kwargs`` (once, for its dataset and
        configuration), as ``n_envs`` batched sub-envs."""
        template = gym.make(env_id, **kwargs).unwrapped
        return cls(template.dataset, template.protocol, n_envs, **env_arguments(template))

    # -- Gymnasium vector API ---------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for num_envs={self.num_envs}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a ({self.num_envs},) bool array with a True, got {mask!r}")
        members = [i for i in range(self.num_envs) if mask[i]]
        for i in members:
            env = self.envs[i]
            gym.Env.reset(env, seed=seeds[i])
            env._start_episode(options)
        self._train_and_score(members)
        results = {i: self.envs[i]._finish_reset() for i in members}
        self._autoreset[members] = False
        self._started = True
        return self._batch_obs(), self._batch_infos({i: results[i][1] for i in members})

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        resets, closes, env_infos = [], {}, {}
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            if self._autoreset[i]:
                gym.Env.reset(env)
                env._start_episode(None)
                resets.append(i)
                continue
            env._require_running()
            if not env._record_pick(env._check_action(action)):
                env_infos[i] = env._get_info(reward_terms={})
            else:
                rows = env._picked_rows()
                closes[i] = (env._begin_close(rows), rows)
        # one batched fit for every env that closed a round or resets, in env order
        self._train_and_score(sorted(resets + list(closes)))
        for i in resets:
            env_infos[i] = self.envs[i]._finish_reset()[1]
        for i, (before, rows) in closes.items():
            _, rewards[i], terminated[i], truncated[i], env_infos[i] = self.envs[i]._finish_close(before, rows)
        self._autoreset = terminated | truncated
        return self._batch_obs(), rewards, terminated, truncated, self._batch_infos(env_infos)

    def action_masks(self) -> np.ndarray:
        """``(n_envs, K)`` boolean masks of the allowed picks (sb3-contrib's ``MaskablePPO``)."""
        return np.stack([env.action_masks() for env in self.envs])

    def call(self, name: str, *args, **kwargs) -> tuple:
        """``getattr(env, name)(*args, **kwargs)`` (or the attribute) of every sub-env."""
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple:
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        for env, value in zip(self.envs, values):
            setattr(env, name, value)

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()

    # -- internals ------------------------------------------------------------------------------
    def _train_and_score(self, members: list[int]) -> None:
        """Steps 1-5 for the sub-envs at ``members``: one batched fit, one batched inference,
        then each env's scoring, drawing each env's seeds in the single env's order."""
        if not members:
            self.last_timings = {}
            return
        t0 = time.perf_counter()
        envs = [self.envs[i] for i in members]
        labeled = [env._labeled_rows() for env in envs]
        seeds = [env._draw_seed() for env in envs]
        first = envs[0]
        fits = self.learner.fit(members, first._features, first._labels, labeled,
                                [env._weights for env in envs], seeds)
        alphas = self.learner.predict_all(members, first._features)
        if self.device.type == "cuda" and first.profile:
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        for j, env in enumerate(envs):
            env._score(fits[j], alphas=alphas[j])
        self.last_timings = {"train_s": t1 - t0, "score_s": time.perf_counter() - t1}

    def _batch_obs(self) -> dict[str, np.ndarray]:
        out = create_empty_array(self.single_observation_space, n=self.num_envs, fn=np.zeros)
        return concatenate(self.single_observation_space, [env._get_obs() for env in self.envs], out)

    def _batch_infos(self, env_infos: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """The sub-envs' infos batched as ``VectorEnv._add_info`` does (an array per key and a
        ``_key`` mask of the envs that have it), built once per key instead of once per env."""
        k = self.envs[0].n_candidates
        for i, info in env_infos.items():
            rows = info.get("candidate_rows")
            if rows is not None and rows.shape[0] < k:
                env_infos[i] = dict(info, candidate_rows=np.concatenate([rows, np.full(k - rows.shape[0], -1, rows.dtype)]))
        return _batch_dicts(env_infos, self.num_envs)


def _batch_dicts(dicts: dict[int, dict[str, Any]], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for d in dicts.values() for key in d))
    for key in keys:
        present = {i: d[key] for i, d in dicts.items() if key in d}
        first = next(iter(present.values()))
        if isinstance(first, dict):
            out[key] = _batch_dicts(present, n)
        else:
            if type(first) in (int, float, bool) or isinstance(first, np.number):
                array = np.zeros(n, dtype=type(first))
            elif isinstance(first, np.ndarray):
                array = np.zeros((n, *first.shape), dtype=first.dtype)
            else:
                array = np.full(n, None, dtype=object)
            for i, value in present.items():
                array[i] = value
            out[key] = array
        mask = np.zeros(n, dtype=bool)
        mask[list(present)] = True
        out[f"_{key}"] = mask
    return out


def env_arguments(env: MultimodalALEnv) -> dict[str, Any]:
    """The ``MultimodalALEnv`` keyword arguments that rebuild ``env`` on its dataset and protocol."""
    return {
        "learner": asdict(env.learner_config),
        "reward": env.reward_type,
        "balance_weight": env.balance_weight,
        "kappa": env.kappa,
        "beta": env.beta,
        "tau": env.tau,
        "epsilon": env.epsilon,
        "kmeans_iterations": env.kmeans_iterations,
        "device": env.device,
        "reference_strategies": env.reference_strategies,
        "reference_cache": env.reference_cache,
    }
