"""DaskFeatureEncoder: FeatureEncoder fitted and applied where a Dask DataFrame's partitions live.

Fitting computes the mergeable statistics of each partition (category and token counts,
numeric moments) on the worker that holds it and merges them in a reduction tree on the
cluster, so the client receives one merged statistics object, the size of the vocabularies,
never rows. Encoding runs one task per partition and returns a Dask array of CSR chunks.
"""

from __future__ import annotations

import re
import uuid
import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec._validation import resolve_dtype
from fmrec.dask._reduce import tree_reduce
from fmrec.features._vocabulary import quantile_levels
from fmrec.features.encoder import FeatureEncoder

# A token that reads like the repr of a Python list/tuple/set/array: the trace of list cells
# that dask turned into strings (see the class docstring).
_LIST_REPR = re.compile(r"^(\[.*\]|\(.*\)|\{.*\}|array\(.*\))$", re.S)


class DaskFeatureEncoder(FeatureEncoder):
    """FeatureEncoder for Dask DataFrames: fitted on the cluster, encoding lazily.

    Takes the parameters of ``FeatureEncoder`` and learns the same vocabularies, feature
    names, means and standard deviations as ``FeatureEncoder.fit`` on the whole frame (the
    merged means and standard deviations may differ in the last bits). Pandas DataFrames are
    passed to ``FeatureEncoder`` unchanged. Uses the active ``distributed.Client`` if there
    is one, else Dask's default scheduler.

    Parameters
    ----------
    categorical, numeric, multi_valued, normalize, handle_unknown, min_frequency, \
standardize, delimiter, dtype, bins, drop_unique
        As in ``FeatureEncoder``. With a Dask DataFrame, quantile bins (``bins={"col": n}``)
        have edges at Dask's approximate quantiles, computed on the cluster (exact with one
        partition, close with many), not at NumPy's exact ones; explicit edges are exact.

    Notes
    -----
    Dask converts object columns to a string dtype by default (``dataframe.convert-string``),
    and does so even for list cells, which then arrive as strings such as ``"['a', 'b']"``.
    Build frames with list-like multi-valued cells inside
    ``dask.config.set({"dataframe.convert-string": False})``, or join the tokens with
    ``delimiter`` first; ``fit`` warns when tokens look like such strings.

    Examples
    --------
    >>> import dask.dataframe as dd
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": [1, 2, 1, 3], "genre": ["A|B", "B", "", "C"]})
    >>> ddf = dd.from_pandas(df, npartitions=2)
    >>> enc = DaskFeatureEncoder(categorical=["user"], multi_valued=["genre"]).fit(ddf)
    >>> enc.feature_names_.tolist()
    ['user=1', 'user=2', 'user=3', 'genre=A', 'genre=B', 'genre=C']
    >>> X = enc.transform(ddf)  # lazy: one CSR chunk per partition
    >>> X.shape, X.numblocks
    ((nan, 6), (2, 1))
    >>> X.compute().toarray()[0].tolist()
    [1.0, 0.0, 0.0, 0.5, 0.5, 0.0]
    >>> type(enc.to_local()).__name__
    'FeatureEncoder'
    """

    def fit(self, df, y=None) -> DaskFeatureEncoder:
        """Learn vocabularies, numeric moments and bin edges from a Dask or pandas DataFrame.

        Parameters
        ----------
        df : dask.dataframe.DataFrame or pandas.DataFrame
            Must hold every configured column; other columns are ignored.
        y : ignored

        Returns
        -------
        self : DaskFeatureEncoder
        """
        if not isinstance(df, dd.DataFrame):
            return super().fit(df, y)
        specs = self._check_params()
        self._check_frame(pd.DataFrame(columns=df.columns), [c for c, _ in specs])
        # The workers get a plain FeatureEncoder holding the parameters only.
        params = FeatureEncoder(**self.get_params())
        pieces = [dask.delayed(_partition_statistics, pure=True)(params, part, i)
                  for i, part in enumerate(df.to_delayed())]
        merged = tree_reduce(pieces, FeatureEncoder._merge_statistics)
        columns = list(self._quantile_bins().items())
        # As Delayed too, so one compute runs both (dask warns when mixing in expressions).
        quantiles = [df[c].quantile(quantile_levels(n)).to_delayed()[0] for c, n in columns]
        stats, *values = dask.compute(merged, *quantiles)
        self._fit_statistics(stats, {c: np.asarray(q, dtype=np.float64)
                                     for (c, _), q in zip(columns, values, strict=True)
                                     if stats[c].n})
        self._warn_list_reprs(df, stats)
        return self

    def _warn_list_reprs(self, df: dd.DataFrame, stats: dict) -> None:
        for c, kind in zip(self.fields_, self._kinds, strict=True):
            # Only a column dask converted can hold list reprs; object columns keep lists.
            if kind != "multi_valued" or not isinstance(df[c].dtype, pd.StringDtype):
                continue
            values = stats[c].values
            looks_like_list = [v for v in values[:1000] if isinstance(v, str)
                               and _LIST_REPR.match(v)]
            if looks_like_list:
                warnings.warn(
                    f"multi-valued column {c!r} has string dtype {df[c].dtype} and tokens "
                    f"such as {looks_like_list[0]!r}: list cells may have been turned into "
                    f"strings by dask; build the frame inside dask.config.set("
                    f"{{'dataframe.convert-string': False}}) or join the tokens with "
                    f"{self.delimiter!r}", UserWarning, stacklevel=3)

    def transform(self, df, lengths=None):
        """Encode each partition where it lives, lazily.

        Parameters
        ----------
        df : dask.dataframe.DataFrame or pandas.DataFrame
            Must hold every fitted column, in any order.
        lengths : None, True or sequence of int, default=None
            Rows per partition, to give the result known chunk sizes. None leaves them
            unknown (NaN, as ``to_dask_array`` does); True counts them with one pass over
            the data now.

        Returns
        -------
        X : dask.array.Array or scipy.sparse.csr_matrix
            For a Dask DataFrame, an array of shape ``(rows, n_features_)``, one chunk per
            partition and one column chunk; each chunk is the ``scipy.sparse.csr_matrix``
            that ``FeatureEncoder.transform`` gives for that partition, so ``compute()``
            stacks them (``scipy.sparse.vstack``) into one CSR matrix equal to
            ``FeatureEncoder.transform`` of the whole frame. Partitions known (through
            ``lengths``) to be empty get no chunk: ``dask.array.concatenate`` drops them.
            Values unseen at fit with ``handle_unknown="error"`` raise when the chunk is
            computed. For a pandas DataFrame, ``FeatureEncoder.transform``'s CSR matrix.
        """
        if not isinstance(df, dd.DataFrame):
            return super().transform(df)
        self._check_fitted()
        self._check_frame(pd.DataFrame(columns=df.columns), self.fields_)
        parts = df.to_delayed()
        if lengths is True:
            lengths = df.map_partitions(len).compute().tolist()
        if lengths is None:
            lengths = [np.nan] * len(parts)
        elif len(lengths) != len(parts):
            raise ValueError(f"lengths has {len(lengths)} entries for {len(parts)} partitions")
        dtype = resolve_dtype(self.dtype)
        meta = sp.csr_matrix((0, self.n_features_), dtype=dtype)
        # A single task holds the fitted state, so it is shipped once per worker, not once
        # per partition; a random key, since hashing large vocabularies would be slow.
        encoder = dask.delayed(self._plain(), name=f"fmrec-encoder-{uuid.uuid4().hex}")
        blocks = [da.from_delayed(dask.delayed(_encode_partition, pure=True)(encoder, part, i),
                                  shape=(n, self.n_features_), dtype=dtype, meta=meta)
                  for i, (part, n) in enumerate(zip(parts, lengths, strict=True))]
        return da.concatenate(blocks, axis=0)

    def _plain(self) -> FeatureEncoder:
        """A FeatureEncoder sharing this encoder's parameters and fitted state."""
        enc = FeatureEncoder(**self.get_params())
        enc._set_state(**self._state())
        return enc

    def to_local(self) -> FeatureEncoder:
        """A plain ``FeatureEncoder`` with the fitted state, usable and saved without Dask.

        It is rebuilt from ``to_arrays()``, so it is what ``FeatureEncoder.from_arrays``
        gives for a saved copy of this encoder (quantile bins come back as their edges).

        Returns
        -------
        encoder : FeatureEncoder
        """
        return FeatureEncoder.from_arrays(self.to_arrays())


def _partition_statistics(encoder: FeatureEncoder, part: pd.DataFrame, i: int) -> dict:
    try:
        return encoder._statistics(part)
    except ValueError as exc:
        # Row numbers in the message count from the start of the partition.
        raise ValueError(f"partition {i}: {exc}") from exc


def _encode_partition(encoder: FeatureEncoder, part: pd.DataFrame, i: int) -> sp.csr_matrix:
    try:
        return encoder.transform(part)
    except ValueError as exc:
        raise ValueError(f"partition {i}: {exc}") from exc

