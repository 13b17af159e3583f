"""Selection strategies behind one interface: a PoolState and a budget in, dataset rows out.

``make_strategy(name, **kwargs)`` builds one by name; ``STRATEGIES`` lists them:

| name               | strategy                                                         |
|--------------------|------------------------------------------------------------------|
| random             | uniform sampling                                                 |
| entropy            | highest entropy of the fused prediction                          |
| margin             | smallest top-1 minus top-2 fused probability                     |
| least-confidence   | smallest top fused probability                                   |
| bald               | BALD, MC dropout (Houlsby et al. 2011; Gal et al. 2017)           |
| coreset            | k-center greedy on embeddings (Sener & Savarese 2018)            |
| badge              | k-means++ on gradient embeddings (Ash et al. 2020)               |
| bmmal              | BADGE with Shapley-scaled modality blocks (Shen et al. 2023)     |
| deepfool           | smallest DeepFool perturbation (Ducoffe & Precup 2018)           |
| gcnal              | UncertainGCN (Caramalau et al. 2021)                             |
| rlmba-score        | top RL-MBA score q, no policy (arXiv 2603.25107)                 |
| softrank-margin    | margin's ranking sampled by softrank (Kirsch et al. 2023)        |
| softrank-score     | q's ranking sampled by softrank (Kirsch et al. 2023)             |
| typiclust          | most typical row of uncovered clusters (Hacohen et al. 2022)     |
| typiclust-margin   | typiclust below a labels/class threshold, then margin (TCM)      |

``run_strategy_episode(env, strategy, seed, rng_seed)`` plays one episode with a strategy.
"""

from rlmba_env.strategies.badge import BADGEStrategy, BMMALStrategy
from rlmba_env.strategies.bald import BALDStrategy
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.coreset import CoresetStrategy
from rlmba_env.strategies.deepfool import DeepFoolStrategy
from rlmba_env.strategies.gcnal import GCNALStrategy
from rlmba_env.strategies.runner import run_strategy_episode
from rlmba_env.strategies.score import RLMBAScoreStrategy
from rlmba_env.strategies.stochastic import SoftrankMarginStrategy, SoftrankScoreStrategy
from rlmba_env.strategies.typiclust import TypiClustMarginStrategy, TypiClustStrategy
from rlmba_env.strategies.uncertainty import (
    EntropyStrategy,
    LeastConfidenceStrategy,
    MarginStrategy,
    RandomStrategy,
)

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RandomStrategy,
        EntropyStrategy,
        MarginStrategy,
        LeastConfidenceStrategy,
        BALDStrategy,
        CoresetStrategy,
        BADGEStrategy,
        BMMALStrategy,
        DeepFoolStrategy,
        GCNALStrategy,
        RLMBAScoreStrategy,
        SoftrankMarginStrategy,
        SoftrankScoreStrategy,
        TypiClustStrategy,
        TypiClustMarginStrategy,
    )
}


def make_strategy(name: str, **kwargs) -> Strategy:
    """The strategy registered as ``name``, built with ``kwargs``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](**kwargs)


__all__ = [
    "STRATEGIES",
    "BADGEStrategy",
    "BALDStrategy",
    "BMMALStrategy",
    "CoresetStrategy",
    "DeepFoolStrategy",
    "EntropyStrategy",
    "GCNALStrategy",
    "LeastConfidenceStrategy",
    "MarginStrategy",
    "PoolState",
    "RLMBAScoreStrategy",
    "RandomStrategy",
    "SoftrankMarginStrategy",
    "SoftrankScoreStrategy",
    "Strategy",
    "TypiClustMarginStrategy",
    "TypiClustStrategy",
    "make_strategy",
    "run_strategy_episode",
]
