"""Active learning: which records should annotators label next.

`strategies` is the pure core (a registry of strategies over a `Pool` of aligned arrays); `selection` is the
DuckDB edge (`select` reads a run's predictions and stores one selection).
"""

from labeling.active.selection import exclusions, select, strategy_history
from labeling.active.strategies import (
    AUTO_CANDIDATES,
    DEFAULT_STRATEGY,
    STRATEGIES,
    ClusterMargin,
    DensityMargin,
    DiverseMargin,
    Entropy,
    LeastConfidence,
    Margin,
    Pool,
    PoolExhausted,
    RandomStrategy,
    Strategy,
    UnknownStrategy,
    check_size,
    choose_auto,
    get_strategy,
    k_center_greedy,
    knn_density,
    register,
    top_n,
)

__all__ = [
    "AUTO_CANDIDATES", "DEFAULT_STRATEGY", "STRATEGIES", "ClusterMargin", "DensityMargin", "DiverseMargin", "Entropy", "LeastConfidence", "Margin", "Pool", "PoolExhausted",
    "RandomStrategy", "Strategy", "UnknownStrategy", "check_size", "choose_auto", "exclusions", "get_strategy",
    "k_center_greedy", "knn_density", "register", "select", "strategy_history", "top_n",
]
