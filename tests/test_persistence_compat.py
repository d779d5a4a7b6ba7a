"""Files written by fmrec 0.1.0 (before the subpackage layout) still load and predict alike.

The fixtures in tests/fixtures/legacy_models were written by that release's code
(``make.py`` beside them) together with what each model predicted then.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import fmrec
from fmrec import FMClassifier, FMRanker, FMRegressor, Recommender

HERE = Path(__file__).parent / "fixtures" / "legacy_models"
EXPECTED = json.loads((HERE / "expected.json").read_text())

spec = {}
exec((HERE / "make.py").read_text().split("\n\ndef main")[0], spec)  # data() and frames()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_legacy_file_loads_and_predicts_as_before(name):
    model = fmrec.load_model(HERE / f"{name}.npz")
    X, _, _ = spec["data"]()
    ratings, _, _ = spec["frames"]()
    want = EXPECTED[name]
    if name.startswith("recommender"):
        assert isinstance(model, Recommender)
        np.testing.assert_allclose(model.predict(ratings.head(5)), want["predict"], rtol=1e-5)
        recs = model.recommend([0, 1, 2], n=3)
        assert recs["item"].tolist() == want["recommend_items"]
        np.testing.assert_allclose(recs["score"], want["recommend_scores"], rtol=1e-5)
    elif name == "ranker":
        assert isinstance(model, FMRanker)
        U = sp.hstack([sp.eye(8), sp.csr_matrix((8, 6))]).tocsr()
        I = sp.hstack([sp.csr_matrix((6, 8)), sp.eye(6)]).tocsr()  # noqa: E741
        np.testing.assert_allclose(model.score_matrix(U[:3], I).ravel(), want["score_matrix"],
                                   rtol=1e-5, atol=1e-7)
    elif name.startswith("classifier"):
        assert isinstance(model, FMClassifier)
        np.testing.assert_allclose(model.predict_proba(X[:5])[:, 1], want["predict_proba"],
                                   rtol=1e-5)
    else:
        assert isinstance(model, FMRegressor)
        np.testing.assert_allclose(model.predict(X[:5]), want["predict"], rtol=1e-5)


@pytest.mark.parametrize("name", ["regressor_sgd", "regressor_mcmc", "classifier_sgd"])
def test_legacy_file_continues_training(name):
    """The training state a legacy file kept (AdaGrad sums, the MCMC chain) is restored."""
    model = fmrec.load_model(HERE / f"{name}.npz")
    X, y, labels = spec["data"]()
    target = labels if name.startswith("classifier") else y
    n_before = len(model.history_["train_loss"])
    model.set_params(warm_start=True, n_epochs=2).fit(X, target)
    assert len(model.history_["train_loss"]) == n_before + 2
    assert np.isfinite(model.predict(X)).all() if name.startswith("regressor") else True


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_legacy_file_resaved_by_this_release_loads_alike(name, tmp_path):
    """Loading a legacy file and saving it again writes today's format with the same model."""
    old = fmrec.load_model(HERE / f"{name}.npz")
    path = tmp_path / "again.npz"
    old.save(path)
    new = fmrec.load_model(path)
    assert type(new) is type(old)
    model_old = old.model_ if isinstance(old, Recommender) else old
    model_new = new.model_ if isinstance(new, Recommender) else new
    np.testing.assert_array_equal(model_new.V_, model_old.V_)
    np.testing.assert_array_equal(model_new.w_, model_old.w_)
    assert model_new.history_ == model_old.history_
