"""Search spaces for ``fmrec.tune``: the defaults per solver and the checks of user spaces."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

SearchSpace = Mapping[str, BaseDistribution] | Callable[[optuna.Trial], dict]


def default_space(solver: str, implicit: bool = False) -> dict[str, BaseDistribution]:
    """The default distributions for ``solver`` ("als", "sgd", "mcmc", or "bpr" for an
    ``FMRanker``), and for a
    Recommender with implicit features (``implicit=True``) their weight.

    Penalties, the init scale and the implicit weight span orders of magnitude, so they are
    drawn log-uniformly; ALS has no learning rate.

    BPR's ranges are narrower than the rating models': on MovieLens 100K positives a
    penalty above ~0.15 collapsed every trial to the popularity ranking, rank 16 and
    learning rates at the ends of [0.01, 0.3] were pruned or trailed, and with a small
    budget (the sampler draws its first 10 trials at random) those draws were lost
    (``benchmarks/bench_tune.py``).
    """
    if solver == "bpr":  # FMRanker: SGD on BPR, penalties per step (not count-scaled)
        space: dict[str, BaseDistribution] = {
            "n_factors": CategoricalDistribution([32, 64, 128]),
            "learning_rate": FloatDistribution(0.02, 0.2, log=True),
            "reg_linear": FloatDistribution(1e-3, 0.1, log=True),
            "reg_factors": FloatDistribution(1e-3, 0.1, log=True),
        }
        if implicit:
            space["implicit_weight"] = FloatDistribution(0.25, 8.0, log=True)
        return space
    if solver == "mcmc":
        # The sampler draws its own penalties (the hyperpriors): only the rank is left.
        space = {"n_factors": CategoricalDistribution([4, 8, 16, 32])}
        if implicit:
            space["implicit_weight"] = FloatDistribution(0.25, 8.0, log=True)
        return space
    space = {
        "n_factors": CategoricalDistribution([4, 8, 16, 32]),
        "reg_linear": FloatDistribution(1e-2, 10.0, log=True),
        "reg_factors": FloatDistribution(1e-2, 10.0, log=True),
        "init_std": FloatDistribution(1e-3, 0.3, log=True),
    }
    if solver == "sgd":
        space["learning_rate"] = FloatDistribution(1e-3, 0.3, log=True)
    if implicit:
        space["implicit_weight"] = FloatDistribution(0.25, 8.0, log=True)
    return space


def check_names(names, allowed, where: str) -> None:
    """``ValueError`` naming every parameter of ``names`` the model does not have."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ValueError(f"{where} has unknown parameter(s) {unknown}; the model's parameters "
                         f"are {sorted(allowed)}")


def check_space(space, allowed) -> None:
    """Check a dict space up front (a callable one is checked on every trial)."""
    if callable(space):
        return
    if not isinstance(space, Mapping):
        raise TypeError(f"search_space must be a dict of name -> optuna distribution or a "
                        f"callable(trial) -> dict, got {type(space).__name__}")
    if not space:
        raise ValueError("search_space is empty: there is nothing to tune")
    check_names(space, allowed, "search_space")
    for name, dist in space.items():
        if not isinstance(dist, BaseDistribution | list | tuple):
            raise TypeError(f"search_space[{name!r}] must be an optuna distribution or a list "
                            f"of choices, got {dist!r}")


def sample(trial: optuna.Trial, space, allowed) -> dict:
    """Draw one point of ``space`` through the trial's public ``suggest_*`` methods."""
    if callable(space):
        params = space(trial)
        if not isinstance(params, Mapping):
            raise TypeError(f"the search_space callable must return a dict, got "
                            f"{type(params).__name__}")
        check_names(params, allowed, "the dict returned by search_space")
        return dict(params)
    return {name: _suggest(trial, name, dist) for name, dist in space.items()}


def _suggest(trial: optuna.Trial, name: str, dist):
    if isinstance(dist, list | tuple):
        return trial.suggest_categorical(name, list(dist))
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"search_space[{name!r}]: unsupported distribution {type(dist).__name__}")
