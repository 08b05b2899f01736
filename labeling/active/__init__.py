"""Active learning: which records should annotators label next.

`strategies` is the pure core (a registry of strategies over a `Pool` of aligned arrays); `selection` is the
DuckDB edge (`select` reads a run's predictions and stores one selection).
"""

from labeling.active.selection import exclusions, select
from labeling.active.strategies import (
    STRATEGIES,
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
    get_strategy,
    k_center_greedy,
    register,
    top_n,
)

__all__ = [
    "STRATEGIES", "DiverseMargin", "Entropy", "LeastConfidence", "Margin", "Pool", "PoolExhausted",
    "RandomStrategy", "Strategy", "UnknownStrategy", "check_size", "exclusions", "get_strategy",
    "k_center_greedy", "register", "select", "top_n",
]
