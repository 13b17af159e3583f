import gymnasium as gym
import pytest

import rlmba_env  # noqa: F401  (registers the ids)
from rlmba_env import MultimodalALEnv
from rlmba_env.config import EnvConfig
from rlmba_env.learner import LearnerConfig

PROTOCOL = {"initial_labels": 10, "per_round": 4, "rounds": 3}


def test_describe_round_trips_through_env_config(small_dataset):
    env = MultimodalALEnv(small_dataset, PROTOCOL, learner={"hidden": 8}, reward="absolute", kappa=3,
                          beta=0.5, tau=0.2, epsilon=0.1, kmeans_iterations=2, reference_strategies=["entropy"])
    described = env.describe()
    assert described["kmeans_iterations"] == 2 and described["learner"]["hidden"] == 8
    assert EnvConfig.from_dict(described) == env.config


def test_keyword_settings_override_a_given_config(small_dataset):
    env = MultimodalALEnv(small_dataset, PROTOCOL, EnvConfig(kappa=3, beta=0.5), beta=2.0)
    assert (env.config.kappa, env.config.beta) == (3, 2.0)


def test_registered_ids_pass_their_keywords_to_env_config():
    env = gym.make("RLMBA-AVDigits-v0", kappa=2, candidates="score", learner={"epochs": 3}, **PROTOCOL).unwrapped
    assert env.config == EnvConfig(kappa=2, candidates="score", learner=LearnerConfig(epochs=3))
    assert env.n_candidates == 2 * PROTOCOL["per_round"]


@pytest.mark.parametrize("name, value", [
    ("reward", "nope"), ("balance_weight", float("nan")), ("kappa", 0), ("kappa", 2.5), ("kappa", True),
    ("candidates", "topq"), ("score", "entropy-outlier"), ("score", 3),
    ("beta", -1.0), ("tau", 0.0), ("epsilon", 1.0), ("kmeans_iterations", -1), ("device", "gpu"),
    ("precision", "float16"), ("render_mode", "human"), ("reference_strategies", "random"),
    ("learner", 3), ("reference_cache", 5), ("fusion_select", True), ("fusion_select", "subset"),
])
def test_a_bad_setting_raises_one_error_naming_it_and_its_value(name, value):
    with pytest.raises(ValueError, match=f"^{name}=.* is not allowed; {name} must be"):
        EnvConfig(**{name: value})


def test_relative_reward_needs_a_reference_strategy():
    with pytest.raises(ValueError, match="reference_strategies"):
        EnvConfig(reward="relative", reference_strategies=())


def test_a_positional_config_that_is_not_an_env_config_is_refused(small_dataset):
    with pytest.raises(TypeError, match="config must be an EnvConfig"):
        MultimodalALEnv(small_dataset, PROTOCOL, {"epochs": 3})
