import numpy as np
import pytest

from fmrec import datasets
from fmrec._reference import predict


def test_make_fm_regression_is_the_stated_fm():
    X, y, truth = datasets.make_fm_regression(n_samples=500, n_features=40, noise=0.0,
                                              random_state=1)
    assert X.shape == (500, 40) and X.dtype == np.float32
    assert np.all(np.diff(X.indptr) == 5)
    expected = predict(X, truth["w0"], truth["w"], truth["V"])
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    for row in range(20):  # distinct, sorted columns in every row
        cols = X.indices[X.indptr[row]:X.indptr[row + 1]]
        assert np.all(np.diff(cols) > 0)


def test_make_fm_classification_labels():
    X, y, _ = datasets.make_fm_classification(n_samples=400, n_features=30, random_state=0)
    assert set(np.unique(y)) == {0, 1} and X.shape == (400, 30)


def test_data_home_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("FMREC_DATA_HOME", str(tmp_path))
    assert datasets.data_home() == tmp_path
    assert datasets.data_home("/elsewhere").as_posix() == "/elsewhere"


def test_missing_split_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="FMREC_DATA_HOME"):
        datasets.load_ml100k_split("u1", tmp_path)
    with pytest.raises(ValueError, match="fold"):
        datasets.load_ml100k_split("u9", tmp_path)


def test_ml100k_split_and_one_hot(ml100k_dir):
    train, test = datasets.load_ml100k_split("u1", ml100k_dir)
    assert len(train) == 80_000 and len(test) == 20_000
    X = datasets.one_hot_user_item(train)
    assert X.shape == (80_000, 943 + 1682)
    np.testing.assert_array_equal(X.indices[:2], [train.user_id[0] - 1,
                                                  943 + train.item_id[0] - 1])
    assert X.sum() == 160_000
