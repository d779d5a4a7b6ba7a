"""
Tuning with pruning
===================

`fmrec.tune` searches an estimator's or a recommender's hyperparameters with Optuna
(``pip install "fmrec[tune]"``). Every trial reports its validation metric after each epoch,
so the pruner can stop a trial that is already behind the others at the same epoch, and
early stopping ends one that no longer improves. Trial 0 is always the untuned template,
so the search never returns a model that validated worse than the defaults.

Here: the rank and penalties of an ALS rating model, 12 trials, on a per-user validation
split carved from the training ratings; the test ratings are only used at the end.
"""

# %%
import optuna

import fmrec
from fmrec.datasets import load_movielens, make_recsys
from fmrec.metrics import rmse
from fmrec.split import train_test_split

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is too chatty

try:
    train, test = load_movielens("100k", download=False).splits["u1"]
except FileNotFoundError:
    data = make_recsys(n_users=600, n_items=1000, n_interactions=40_000, noise=0.9)
    train, test = train_test_split(data.interactions, method="per_user", random_state=0)

# ``target_weight=1``: order lists by the rating model alone, so no ranker is trained
# beside it (tuning on RMSE only needs the rating model).
template = fmrec.Recommender(
    target="rating", target_weight=1, random_state=0,
    model=fmrec.FMRegressor(solver="als", n_factors=8, n_epochs=50, init_std=0.01))

# %%
# The search
# ----------
# The default space covers ``n_factors``, ``reg_linear``, ``reg_factors`` and ``init_std``;
# the default pruner is Optuna's median pruner, after a warm-up of
# ``max(2 * early_stopping_rounds, n_epochs / 5)`` epochs.
result = fmrec.tune(template, train, n_trials=12, metric="rmse", random_state=0)
trials = result.study.trials_dataframe(attrs=("number", "value", "state", "params",
                                               "user_attrs"))
trials["epochs_run"] = trials["user_attrs_epochs_run"]
columns = ["number", "state", "value", "epochs_run", "params_n_factors", "params_reg_linear",
           "params_reg_factors", "params_init_std"]
print(trials[columns].round(4).to_string(index=False))
print("best:", {k: round(v, 4) if isinstance(v, float) else v
                for k, v in result.best_params.items()})

# %%
# Did it help?
# ------------
# ``best_model`` is the best configuration refitted on all of ``train``.
untuned = template.fit(train)
print(f"test RMSE untuned {rmse(test['rating'], untuned.predict(test)):.4f}, "
      f"tuned {rmse(test['rating'], result.best_model.predict(test)):.4f}")
pruned = (trials["state"] == "PRUNED").sum()
print(f"{pruned} of {len(trials)} trials pruned; "
      f"{int(trials['epochs_run'].sum())} epochs run in all, against "
      f"{len(trials) * template.model.n_epochs} without pruning or early stopping")

# %%
# The study, trial by trial: completed trials as dots, pruned ones as crosses at the last
# value they reported, and the best value so far.
fig_history = fmrec.plot.tuning_history(result.study)

# %%
# Which hyperparameters mattered (Optuna's fANOVA importances over the completed trials):
fig_importance = fmrec.plot.param_importances(result.study)
