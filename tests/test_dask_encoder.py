"""DaskFeatureEncoder against FeatureEncoder on the same data, on an in-process cluster."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402

from fmrec import FeatureEncoder  # noqa: E402
from fmrec.dask import DaskFeatureEncoder  # noqa: E402

# Dask's default string conversion would turn the list cells into their reprs.
NO_STRING_CONVERSION = {"dataframe.convert-string": False}

PARAMS = dict(categorical=["user", "item", "cat"], numeric=["age", "score"],
              multi_valued=["genres", "tags"], standardize=True, bins={"age": [20, 40, 60]})


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                       dashboard_address=":0")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def make_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    genres = np.array(["Action", "Comedy", "Drama", "Horror", "Noir"])
    return pd.DataFrame({
        "user": rng.integers(0, 40, n),
        "item": rng.choice([f"i{k}" for k in range(25)], n),
        "cat": pd.Categorical(rng.choice(["x", "y", "z"], n), categories=["w", "x", "y", "z"]),
        "age": rng.uniform(10, 80, n),
        # Far from zero and narrow: merging sums of squares would lose its variance.
        "score": 1e6 + rng.normal(0, 1e-3, n),
        "genres": ["|".join(rng.choice(genres, rng.integers(0, 3), replace=False))
                   for _ in range(n)],
        "tags": [list(rng.integers(0, 30, rng.integers(0, 4))) for _ in range(n)],
    })


def to_dask(df, npartitions):
    with dask.config.set(NO_STRING_CONVERSION):
        return dd.from_pandas(df, npartitions=npartitions, sort=False)


def assert_same_fit(denc, enc):
    assert denc.fields_ == enc.fields_
    assert denc.feature_names_.tolist() == enc.feature_names_.tolist()
    np.testing.assert_array_equal(denc.field_of_feature_, enc.field_of_feature_)
    np.testing.assert_allclose(denc._means, enc._means, rtol=1e-13)
    # 1e-7: the merged deviation of "score" (1e6 give or take 1e-3) is that close; 1e-15 for age.
    np.testing.assert_allclose(denc._stds, enc._stds, rtol=1e-7)
    for c in enc.fields_:
        if enc._vocabs[enc.fields_.index(c)] is not None:
            assert denc.field_values(c).tolist() == enc.field_values(c).tolist()


def assert_same_matrix(X, Y, enc=None):
    """Equal CSR matrices; a standardized field of ``enc`` to float32 rounding."""
    assert sp.issparse(X) and X.format == "csr" and X.shape == Y.shape and X.dtype == Y.dtype
    assert X.indices.dtype == Y.indices.dtype and X.has_canonical_format
    X, Y = X.tocsc(), Y.tocsc()
    approx = np.zeros(X.shape[1], dtype=bool)
    for c in (enc.numeric if enc is not None and enc.standardize else []):
        approx[enc.field_slice(c)] = enc._vocabs[enc.fields_.index(c)] is None
    # The merged mean and std may differ from NumPy's in the last bits, and so may the
    # float32 values they scale (by ~1e-7 in standard deviations).
    np.testing.assert_allclose(X[:, approx].toarray(), Y[:, approx].toarray(), atol=1e-6)
    assert (X[:, ~approx] != Y[:, ~approx]).nnz == 0


@pytest.mark.parametrize("npartitions", [3, 5])
@pytest.mark.parametrize("min_frequency", [None, 9])
def test_fit_and_transform_match_pandas(client, npartitions, min_frequency):
    df = make_frame()
    ddf = to_dask(df, npartitions)
    assert ddf.npartitions == npartitions
    enc = FeatureEncoder(**PARAMS, min_frequency=min_frequency).fit(df)
    denc = DaskFeatureEncoder(**PARAMS, min_frequency=min_frequency).fit(ddf)
    assert_same_fit(denc, enc)
    if min_frequency:  # folding is decided by the counts summed over the partitions
        assert "user=__infrequent__" in enc.feature_names_
    X = denc.transform(ddf)
    assert X.shape[1] == enc.n_features_ and X.numblocks == (npartitions, 1)
    assert np.isnan(X.shape[0])  # row counts are not known without a pass over the data
    assert_same_matrix(X.compute(), enc.transform(df), enc)


def test_string_cells_and_int_tokens_with_default_string_conversion(client):
    # "A|B" cells and categorical strings as dask (pyarrow) string columns.
    df = make_frame()[["user", "item", "genres"]]
    ddf = dd.from_pandas(df, npartitions=4)
    assert pd.api.types.is_string_dtype(ddf["item"].dtype)
    kw = dict(categorical=["user", "item"], multi_valued=["genres"], normalize="sqrt")
    enc, denc = FeatureEncoder(**kw).fit(df), DaskFeatureEncoder(**kw).fit(ddf)
    assert_same_fit(denc, enc)
    assert_same_matrix(denc.transform(ddf).compute(), enc.transform(df))


def test_list_cells_turned_into_strings_warn(client):
    df = pd.DataFrame({"tags": [["a", "b"], ["b"], []] * 4})
    ddf = dd.from_pandas(df, npartitions=2)  # dask's default turns the lists into "['a', 'b']"
    with pytest.warns(UserWarning, match="convert-string"):
        DaskFeatureEncoder(multi_valued=["tags"]).fit(ddf)
    # Tokens that merely look like lists, in a column dask did not convert: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DaskFeatureEncoder(multi_valued=["tags"]).fit(to_dask(df.map(str).astype(object), 2))


def test_standardization_is_stable_far_from_zero(client):
    df = make_frame()
    denc = DaskFeatureEncoder(numeric=["score"], standardize=True).fit(to_dask(df, 5))
    # Merged sums of squares are off by ~1000% here (1e12 against a variance of 1e-6).
    np.testing.assert_allclose(denc._means[0], df["score"].mean(), rtol=1e-15)
    np.testing.assert_allclose(denc._stds[0], np.std(df["score"].to_numpy()), rtol=1e-7)
    age = DaskFeatureEncoder(numeric=["age"], standardize=True).fit(to_dask(df, 5))
    np.testing.assert_allclose(age._stds[0], np.std(df["age"].to_numpy()), rtol=1e-14)


def test_quantile_bins_close_to_exact(client):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=20_000)})
    enc = FeatureEncoder(numeric=["x"], bins={"x": 5}).fit(df)
    denc = DaskFeatureEncoder(numeric=["x"], bins={"x": 5}).fit(to_dask(df, 4))
    exact, approx = enc._vocabs[0].edges, denc._vocabs[0].edges
    assert len(exact) == len(approx) == 4
    np.testing.assert_allclose(approx, exact, atol=0.05)
    # The local copy keeps the approximate edges.
    np.testing.assert_array_equal(denc.to_local()._vocabs[0].edges, approx)
    # One partition: dask's quantiles are the exact ones.
    one = DaskFeatureEncoder(numeric=["x"], bins={"x": 5}).fit(to_dask(df, 1))
    np.testing.assert_allclose(one._vocabs[0].edges, exact, rtol=1e-12)


def test_missing_values_in_one_partition_fit_as_the_whole(client):
    # Only partition 2 has missing values: the merged statistics still give the whole
    # frame's missing-value features and imputation mean.
    df = make_frame(60)
    df["item"] = df["item"].astype(object)
    df.loc[45, "item"] = None
    df.loc[50, "age"] = np.nan
    kw = dict(categorical=["user", "item"], numeric=["age"], standardize=True)
    denc = DaskFeatureEncoder(**kw).fit(to_dask(df, 3))
    enc = FeatureEncoder(**kw).fit(df)
    assert_same_fit(denc, enc)
    assert {"item=<missing>", "age=<missing>"} <= set(denc.feature_names_)
    np.testing.assert_allclose(denc._fills, enc._fills, rtol=1e-12)
    np.testing.assert_allclose(denc.transform(to_dask(df, 3)).compute().toarray(),
                               enc.transform(df).toarray(), rtol=1e-6)


def test_infinity_in_one_partition_raises(client):
    df = make_frame(60)
    df.loc[45, "age"] = np.inf
    with pytest.raises(ValueError, match=r"partition 2: column 'age' is infinite"):
        DaskFeatureEncoder(numeric=["age"]).fit(to_dask(df, 3))


def test_missing_column_is_named(client):
    ddf = to_dask(make_frame(20), 2)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['nope'\]"):
        DaskFeatureEncoder(categorical=["user", "nope"]).fit(ddf)
    enc = DaskFeatureEncoder(categorical=["user"]).fit(ddf)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['user'\]"):
        enc.transform(ddf[["item"]])


def test_unseen_values_raise_when_computed(client):
    train = to_dask(pd.DataFrame({"c": list("abab")}), 2)
    test = to_dask(pd.DataFrame({"c": list("abzb")}), 2)
    enc = DaskFeatureEncoder(categorical=["c"], handle_unknown="error").fit(train)
    X = enc.transform(test)  # lazy: nothing is encoded yet
    with pytest.raises(ValueError, match=r"column 'c' has 1 value\(s\) not seen at fit: 'z'"):
        X.compute()
    ignored = DaskFeatureEncoder(categorical=["c"]).fit(train).transform(test).compute()
    assert ignored.toarray().tolist() == [[1, 0], [0, 1], [0, 0], [0, 1]]


def test_client_receives_only_the_merged_statistics(client, monkeypatch):
    n = 200_000
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"c": rng.choice(["a", "b", "c", "d"], n), "x": rng.normal(size=n),
                       "g": rng.choice(["p|q", "q", "r|s|p"], n)})
    ddf = to_dask(df, 8).persist()  # the rows live on the workers
    received = []
    fit_statistics = FeatureEncoder._fit_statistics

    def spy(self, stats, quantiles=None):
        received.append((stats, quantiles))
        return fit_statistics(self, stats, quantiles)

    monkeypatch.setattr(FeatureEncoder, "_fit_statistics", spy)
    kw = dict(categorical=["c"], numeric=["x"], multi_valued=["g"], standardize=True)
    enc = DaskFeatureEncoder(**kw).fit(ddf)
    (stats, quantiles), = received
    assert not quantiles
    assert len(pickle.dumps(df)) > 2_000_000
    assert len(pickle.dumps(stats)) < 50_000
    assert stats["c"].counts.sum() == n and stats["x"].n == n
    monkeypatch.undo()
    assert_same_fit(enc, FeatureEncoder(**kw).fit(df))


def test_empty_partition(client):
    df = make_frame(90)
    df["age"] = np.repeat([1.0, 30.0, 50.0], 30)  # from_pandas keeps rows in order
    ddf = to_dask(df, 3)
    kept = ddf[ddf["age"] > 5]  # partition 0 ends up empty
    assert kept.map_partitions(len).compute().tolist() == [0, 30, 30]
    local = df[df["age"] > 5]
    enc = FeatureEncoder(**PARAMS).fit(local)
    denc = DaskFeatureEncoder(**PARAMS).fit(kept)
    assert_same_fit(denc, enc)
    X = denc.transform(kept)
    assert X.numblocks == (3, 1)
    assert_same_matrix(X.compute(), enc.transform(local), enc)
    # With known lengths, dask.array.concatenate drops the empty chunk.
    X = denc.transform(kept, lengths=True)
    assert X.chunks[0] == (30, 30)
    assert_same_matrix(X.compute(), enc.transform(local), enc)


def test_fully_empty_frame(client):
    df = make_frame(30)
    empty = to_dask(df, 2)
    empty = empty[empty["age"] > 1000]
    kw = dict(categorical=["user"], numeric=["age"], standardize=True, bins={"age": 3})
    denc = DaskFeatureEncoder(**kw).fit(empty)
    enc = FeatureEncoder(**kw).fit(df.iloc[:0])
    assert_same_fit(denc, enc)
    assert denc.transform(empty).compute().shape == (0, enc.n_features_)


def test_known_lengths_give_known_chunks(client):
    ddf = to_dask(make_frame(50), 3)
    enc = DaskFeatureEncoder(categorical=["user"]).fit(ddf)
    sizes = ddf.map_partitions(len).compute().tolist()
    X = enc.transform(ddf, lengths=sizes)
    assert X.shape == (50, enc.n_features_) and X.chunks[0] == tuple(sizes)
    with pytest.raises(ValueError, match="lengths has 2 entries for 3 partitions"):
        enc.transform(ddf, lengths=[1, 2])


def test_pandas_input_is_feature_encoder(client):
    df = make_frame(50)
    enc = FeatureEncoder(**PARAMS).fit(df)
    denc = DaskFeatureEncoder(**PARAMS).fit(df)
    np.testing.assert_array_equal(denc._stds, enc._stds)  # the very same path
    assert_same_matrix(denc.transform(df), enc.transform(df))


def test_to_local_round_trips_the_state(client, tmp_path):
    df = make_frame()
    denc = DaskFeatureEncoder(**PARAMS, min_frequency=3).fit(to_dask(df, 4))
    local = denc.to_local()
    assert type(local) is FeatureEncoder
    assert_same_fit(local, denc)
    np.savez(tmp_path / "enc.npz", **local.to_arrays())
    loaded = FeatureEncoder.from_arrays(np.load(tmp_path / "enc.npz"))
    assert_same_matrix(loaded.transform(df), denc.transform(to_dask(df, 2)).compute())
    assert_same_matrix(loaded.transform(df), denc.transform(df))


def test_unsortable_categories_keep_global_first_seen_order(client):
    df = pd.DataFrame({"c": pd.Series(["b", 2, "a", 1, "b", 3.5, 2], dtype=object)})
    enc = FeatureEncoder(categorical=["c"]).fit(df)
    denc = DaskFeatureEncoder(categorical=["c"]).fit(to_dask(df, 3))
    assert denc.feature_names_.tolist() == enc.feature_names_.tolist()

