"""The model a Recommender trains when it is given none, per task, chosen by measurement.

Untuned candidates were scored on a validation split carved from the training data and on
the test split, on MovieLens 100K and on ``fmrec.datasets.make_recsys`` data of about its
size, with ids only, with side features, and with implicit sets (``implicit="users"`` /
``"both"``); a default is the candidate with the smallest mean distance to the best
candidate of each validation column, fit time permitting. Reproduce with

    FMREC_DATA_HOME=... python benchmarks/bench_defaults.py [--task ratings labels implicit]

(one fit per figure, ``random_state=0``, one thread; the machine was shared and busy, so the
times are indicative). The synthetic figures are those of ``make_recsys`` before its
exposure model depended on preferences: re-run them when it changes.

Each cell is validation / test; ``ml1`` is MovieLens 100K, ``syn`` the synthetic set.

Ratings (``Recommender(target="rating")``), RMSE; the rank k and sweeps e of each model:

                               ALS k16 e20   ALS k8 e50    MCMC k8 e50   MCMC k8 e200  MCMC k8 e200
                               old default   class dflt                                50 samples *
    ml1 ids                    .9196/.9258   .9154/.9222   .9180/.9253   .8985/.9068   .8990/.9079
    ml1 side                   .9263/.9253   .9176/.9180   .9057/.9076   .8956/.8996   .8959/.9003
    ml1 side+implicit users    .9248/.9243   .9099/.9132   .8992/.9037   .8927/.8964   .8934/.8971
    ml1 side+implicit both     .9164/.9125   .9045/.9039   .8918/.8918   .8822/.8877   .8827/.8881
    syn ids                    .4990/.4927   .4990/.4927   .4883/.4835   .4868/.4826   .4874/.4829
    syn side                   .3297/.3254   .3296/.3255   .3271/.3218   .3251/.3201   .3254/.3205
    syn side+implicit users    .3291/.3251   .3292/.3251   .3280/.3231   .3258/.3204   .3265/.3207
    syn side+implicit both     .3289/.3249   .3290/.3248   .3285/.3232   .3267/.3210   .3271/.3212

Labels (liked = rating >= 4, ``FMClassifier``), AUC; same columns (log loss ranks them alike):

    ml1 ids                    .7805/.7854   .7807/.7856   .7734/.7828   .7932/.8003   .7925/.7996
    ml1 side                   .7824/.7898   .7826/.7903   .7877/.7934   .7996/.8068   .7989/.8065
    ml1 side+implicit users    .7865/.7943   .7876/.7942   .7927/.8013   .8022/.8095   .8016/.8091
    ml1 side+implicit both     .7920/.8011   .7921/.8010   .8018/.8095   .8066/.8153   .8060/.8148
    syn ids                    .8543/.8485   .8546/.8494   .8541/.8484   .8711/.8724   .8707/.8720
    syn side                   .9509/.9518   .9508/.9520   .9495/.9503   .9522/.9531   .9519/.9527
    syn side+implicit users    .9509/.9520   .9507/.9520   .9503/.9499   .9523/.9532   .9526/.9530
    syn side+implicit both     .9513/.9521   .9510/.9522   .9487/.9491   .9526/.9526   .9525/.9524

Implicit feedback (``FMRanker``; 30 epochs, learning rate 0.05, 5 candidates, uniform
sampling), NDCG@10; rank k and both penalties:

                               k32 0.01      k32 0.05      k64 0.02      k64 0.05 *    k64 0.1
                               old default
    ml1 ids                    .1821/.2864   .2088/.3099   .1907/.2969   .2088/.3168   .1769/.2588
    ml1 side                   .1920/.3041   .2107/.3135   .1974/.3063   .2139/.3211   .1863/.2766
    syn ids                    .0490/.0850   .0735/.1125   .0539/.0886   .0716/.1057   .0944/.1265
    syn side                   .0614/.0980   .0824/.1169   .0682/.0994   .0828/.1160   .0960/.1322
    ml1 ids+implicit users     .1873/.2923   .2074/.3071             -   .2099/.3154             -
    ml1 side+implicit users    .1967/.2971   .2104/.3142             -   .2150/.3201             -
    syn ids+implicit users     .0367/.0647   .0621/.0957             -   .0608/.0942             -
    syn side+implicit users    .0512/.0832   .0744/.1082             -   .0732/.1129             -

What was traded. MCMC needs its 200 sweeps: at the estimators' 50 it loses to ALS on MovieLens
ids. On u1.base (ids, one thread, two runs on a quieter machine) ALS k16 e20 fitted in 0.3 s
and recommended for all 943 users in 0.02-0.06 s; MCMC k8 e200 took 1.1 s and 0.6 s (190
samples); keeping 50 samples, 1.1-1.2 s and 0.15-0.19 s, for +0.0005 to +0.001 RMSE. So about
4x the fit time for 0.018 to 0.027 less test RMSE on MovieLens (0.005 to 0.010 on ``syn``);
the probit MCMC of labels took about 2.5x ALS's fit time in the busy runs above. MCMC k16 and
k32 at 200 sweeps tie k8 at 1.7x and 3.5x its time; ALS at k 16/32 or reg_factors 3, and SGD
at its defaults (slow with implicit sets), do worse than ALS k8 e50, which stays the
estimators' default. For ranking, 128 factors tie 64 at twice the time; 50 epochs, learning
rate 0.1 or 10 candidates gain nothing on average; 1 candidate and popularity sampling lose.
The penalty matters most: 0.1 wins on ``syn`` but loses 0.03 to 0.06 on ``ml1``. 0.05 costs
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
