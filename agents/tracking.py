"""TensorBoard tracking shared by the training scripts: run names, hyperparameters, episode metrics."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat


def run_name(env_id: str, agent: str, seed: int) -> str:
    """``{env_id}__{agent}__{seed}__{timestamp}``, as CleanRL names its runs."""
    return f"{env_id}__{agent}__{seed}__{int(time.time())}"


def hyperparameter_table(args: Any) -> str:
    """A markdown table of a dataclass of arguments, for TensorBoard's text tab."""
    rows = "\n".join(f"|{k}|{json.dumps(v) if isinstance(v, (dict, list)) else v}|" for k, v in asdict(args).items())
    return f"|param|value|\n|-|-|\n{rows}"


def episode_scalars(info: dict[str, Any], modalities: tuple[str, ...] | None) -> dict[str, float]:
    """The end-of-episode scalars every agent logs, under shared tags so runs compare side by side;
    ``modalities`` None: those in ``info`` (episodes of a suite of datasets differ)."""
    if modalities is None:
        modalities = tuple(k.removeprefix("test_top1_") for k in info if k.startswith("test_top1_"))
    scalars = {
        "test/top1": info["test_top1"],
        "charts/final_val_top1": info["top1"],
        "charts/balance": info["balance"],
        "charts/labeled": info["labeled"],
    }
    for m in modalities:
        scalars[f"test/top1_{m}"] = info[f"test_top1_{m}"]
        scalars[f"contribution/{m}"] = info[f"contribution_{m}"]
        scalars[f"fusion/{m}"] = info[f"fused_{m}"]
    return scalars


class EpisodeMetricsCallback(BaseCallback):
    """Writes the hyperparameter table once and, for every finished episode, its return and
    final test top-1, per-modality top-1, Shapley contributions and balance, at the current
    timestep. Reward terms are averaged over the rounds of each episode."""

    def __init__(self, hyperparameters: str, modalities: tuple[str, ...] | None):
        super().__init__()
        self.hyperparameters = hyperparameters
        self.modalities = modalities
        self.writer = None
        self._returns: list[float] = []
        self._terms: list[dict[str, list[float]]] = []

    def _on_training_start(self) -> None:
        for fmt in self.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                self.writer = fmt.writer
        if self.writer is not None:
            self.writer.add_text("hyperparameters", self.hyperparameters)
        n = self.training_env.num_envs
        self._returns = [0.0] * n
        self._terms = [{} for _ in range(n)]

    def _on_step(self) -> bool:
        for i, (reward, done, info) in enumerate(
            zip(self.locals["rewards"], self.locals["dones"], self.locals["infos"])
        ):
            self._returns[i] += float(reward)
            for key, value in info.get("reward_terms", {}).items():
                if key != "balance_weight":  # a constant, already in the hyperparameters
                    self._terms[i].setdefault(key, []).append(float(value))
            if not done:
                continue
            scalars = episode_scalars(info, self.modalities)
            scalars["charts/episodic_return"] = self._returns[i]
            for key, values in self._terms[i].items():
                scalars[f"reward/{key}"] = sum(values) / len(values)
            if self.writer is not None:
                for tag, value in scalars.items():
                    self.writer.add_scalar(tag, value, self.num_timesteps)
            self._returns[i] = 0.0
            self._terms[i] = {}
        return True
