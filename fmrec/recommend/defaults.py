"""The model a Recommender trains when it is given none, per task, chosen by measurement.

Untuned candidates were scored on a validation split carved from the training data and on
the test split, on MovieLens 100K and on ``fmrec.datasets.make_recsys`` data of about its
size, with ids only, with side features, and with implicit sets (``implicit="users"`` /
``"both"``); a default is the candidate with the smallest mean distance to the best
candidate of each validation column, fit time permitting. Reproduce with

    FMREC_DATA_HOME=... python benchmarks/bench_defaults.py [--task ratings labels implicit]

(one fit per figure, ``random_state=0``, one thread; the machine was shared and busy, so the
times are indicative). The synthetic set is ``make_recsys`` with its preference-driven
exposure (the pairs users rate follow the same FM as the ratings): re-run it when
``make_recsys`` changes.

Each cell is validation / test; ``ml1`` is MovieLens 100K, ``syn`` the synthetic set.

Ratings (``Recommender(target="rating")``), RMSE; the rank k and sweeps e of each model:

                               ALS k16 e20   ALS k8 e50    MCMC k8 e50   MCMC k8 e200  MCMC k8 e200
                               old default   class dflt                                50 samples *
    ml1 ids                    .9196/.9258   .9154/.9222   .9180/.9253   .8985/.9068   .8990/.9079
    ml1 side                   .9263/.9253   .9176/.9180   .9057/.9076   .8956/.8996   .8959/.9003
    ml1 side+implicit users    .9248/.9243   .9099/.9132   .8992/.9037   .8927/.8964   .8934/.8971
    ml1 side+implicit both     .9164/.9125   .9045/.9039   .8918/.8918   .8822/.8877   .8827/.8881

Labels (liked = rating >= 4, ``FMClassifier``), AUC; same columns (log loss ranks them alike):

    ml1 ids                    .7805/.7854   .7807/.7856   .7734/.7828   .7932/.8003   .7925/.7996
    ml1 side                   .7824/.7898   .7826/.7903   .7877/.7934   .7996/.8068   .7989/.8065
    ml1 side+implicit users    .7865/.7943   .7876/.7942   .7927/.8013   .8022/.8095   .8016/.8091
    ml1 side+implicit both     .7920/.8011   .7921/.8010   .8018/.8095   .8066/.8153   .8060/.8148

Implicit feedback (``FMRanker``; 30 epochs, learning rate 0.05, 5 candidates, uniform
sampling), NDCG@10; rank k and both penalties:

                               k32 0.01      k32 0.05      k64 0.02      k64 0.05 *    k64 0.1
                               old default
    ml1 ids                    .1821/.2864   .2088/.3099   .1907/.2969   .2088/.3168   .1769/.2588
    ml1 side                   .1920/.3041   .2107/.3135   .1974/.3063   .2139/.3211   .1863/.2766
    ml1 ids+implicit users     .1873/.2923   .2074/.3071             -   .2099/.3154             -
    ml1 side+implicit users    .1967/.2971   .2104/.3142             -   .2150/.3201             -

On ``syn`` (``--dataset synthetic``), validation / test, with the candidates that matter:

    ratings, RMSE                ids            side           side+implicit both
    ALS k16 e20 (old default)    .5610/.5693    .3278/.3295    .3236/.3258
    ALS k8 e50 (class default)   .5611/.5685    .3273/.3290    .3233/.3251
    MCMC k8 e200 50 samples *    .5570/.5616    .3201/.3225    .3191/.3210
    labels, AUC
    ALS k16 e20 (old default)    .8418/.8374    .9468/.9476    .9482/.9494
    ALS k8 e50 (class default)   .8418/.8374    .9473/.9481    .9485/.9496
    MCMC k8 e200 50 samples *    .8492/.8470    .9476/.9488    .9496/.9508
    implicit, NDCG@10            ids            side
    k32 0.01 (old default)       .1896/.2900    .2428/.3277
    k32 0.05                     .2451/.3388    .2534/.3396
    k64 0.02                     .2058/.2867    .2319/.3168
    k64 0.05 *                   .2464/.3289    .2542/.3436
    k64 0.1                      .2510/.3297    .2571/.3397

What was traded. MCMC needs its 200 sweeps: at the estimators' 50 it loses to ALS on MovieLens
ids. On u1.base (ids, one thread, two runs on a quieter machine) ALS k16 e20 fitted in 0.3 s
and recommended for all 943 users in 0.02-0.06 s; MCMC k8 e200 took 1.1 s and 0.6 s (190
samples); keeping 50 samples, 1.1-1.2 s and 0.15-0.19 s, for +0.0005 to +0.001 RMSE. So about
4x the fit time for 0.018 to 0.027 less test RMSE on MovieLens (0.004 to 0.008 on ``syn``);
the probit MCMC of labels took about 2.5x ALS's fit time in the busy runs above. MCMC k16 and
k32 at 200 sweeps tie k8 at 1.7x and 3.5x its time; ALS at k 16/32 or reg_factors 3, and SGD
at its defaults (slow with implicit sets), do worse than ALS k8 e50, which stays the
estimators' default. For ranking, 128 factors tie 64 at twice the time; 50 epochs, learning
rate 0.1 or 10 candidates gain nothing on average; 1 candidate and popularity sampling lose.
The penalty matters most: 0.1 edges 0.05 on ``syn`` (by 0.004 on validation) but loses 0.03 to
0.06 on ``ml1``. 0.05 costs
users known only by their demographics: the cold-start test of
``tests/test_movielens_ranking.py`` measures 0.3849 at these defaults, 0.4020 at the old ones
(popularity: 0.3837). Implicit feedback with context columns keeps the previous default (an
``FMClassifier`` of 16 factors and 20 ALS sweeps against sampled negatives): not measured
here.
"""

from __future__ import annotations

from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker

TARGET_KINDS = ("rating", "label", "implicit")

# Ratings and labels: Bayesian FM, nothing to tune. 200 sweeps (the estimators' 50 leave the
# chain short of its best); 50 retained samples, because recommend() scores every sample
# and the fitted model stores them all.
RATING_PARAMS = {"solver": "mcmc", "n_factors": 8, "n_epochs": 200, "n_samples": 50}
LABEL_PARAMS = dict(RATING_PARAMS)
# Implicit feedback with context columns: log loss against sampled negatives (FMRanker does
# not take context yet). Not re-measured: the previous default.
CONTEXT_PARAMS = {"n_factors": 16, "n_epochs": 20}


def default_model(target_kind: str, has_context: bool = False):
    """The unfitted model a Recommender trains for ``target_kind`` when given no model.

    Parameters
    ----------
    target_kind : {"rating", "label", "implicit"}
        Numeric ratings (regression), two-valued labels (classification), or implicit
        feedback (positives only, no target column).
    has_context : bool, default=False
        Whether the interactions carry context columns. Only implicit feedback cares:
        ``FMRanker`` does not take context, so an ``FMClassifier`` learns against sampled
        negatives instead.

    Returns
    -------
    FMRegressor, FMClassifier or FMRanker
        A new estimator with ``random_state=None`` (the Recommender passes its own).

    Examples
    --------
    >>> from fmrec.recommend.defaults import default_model
    >>> type(default_model("implicit")).__name__
    'FMRanker'
    >>> default_model("rating").solver
    'mcmc'
    """
    if not isinstance(target_kind, str):
        raise TypeError(f"target_kind must be a str, one of {list(TARGET_KINDS)}, got "
                        f"{type(target_kind).__name__}")
    if target_kind not in TARGET_KINDS:
        raise ValueError(f"target_kind must be one of {list(TARGET_KINDS)}, got "
                         f"{target_kind!r}")
    if target_kind == "rating":
        return FMRegressor(**RATING_PARAMS)
    if target_kind == "label":
        return FMClassifier(**LABEL_PARAMS)
    if has_context:
        return FMClassifier(**CONTEXT_PARAMS)
    return FMRanker()
