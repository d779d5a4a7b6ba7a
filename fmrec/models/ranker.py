"""FMRanker: a Factorization Machine trained for top-N ranking by BPR (implicit feedback)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from fmrec import _validation as v
from fmrec.design import part_terms
from fmrec.models._base import check_warm, restore_on_failure, warm_state
from fmrec.models._record import fm_record, restore_fm
from fmrec.models._training import Callback, run_epochs
from fmrec.persistence import register, save_model
from fmrec.solvers._state import FMState, predict_csr
from fmrec.solvers.bpr import BPREpoch, BPRSolver


@register
class FMRanker(BaseEstimator):
    """Factorization Machine for implicit feedback, trained by Bayesian Personalized Ranking.

    Users and items are sparse rows over one feature space: user u is ``U[u]`` (a one-hot id,
    demographics, implicit sets...) and item i is ``I[i]``. The score of (u, i) is the FM
    output ŷ of the row ``U[u] + I[i]`` (sum-of-squares identity; the columns of users and
    items may overlap). Training runs SGD over triples (u, i, j), i a positive of u and j a
    sampled item u has not interacted with, and each step descends::

        ℓ(u, i, j) = -ln σ(ŷ(U[u] + I[i]) - ŷ(U[u] + I[j]))
                     + ½ reg_linear Σ_{c ∈ I[i] ∪ I[j]} w_c²
                     + ½ reg_factors Σ_{c ∈ U[u] ∪ I[i] ∪ I[j]} |v_c|²

    (c ∈ R: column c is non-zero in row R); that is, the objective minimized is
    Σ_(u,i) E_j ℓ(u, i, j): the negative BPR log-likelihood plus L2 penalties applied once per
    occurrence of a parameter in a triple. The terms of the user's columns alone cancel in
    the difference, so a step costs O(k (nnz(U[u]) + nnz(I[i]) + nnz(I[j]))). The intercept
    cancels too: ``w0_`` is 0, and the linear weights of columns found only in user rows stay
    0 (they do not affect any ranking of items for a user).

    Parameters
    ----------
    n_factors : int, default=64
        Rank k of the pairwise interactions.
    n_epochs : int, default=30
        Passes over the (shuffled) positives, one sampled negative each.
    learning_rate : float, default=0.05
        Step size (the AdaGrad base rate with ``lr_schedule="adagrad"``).
    lr_schedule : {"adagrad", "constant"}, default="adagrad"
        AdaGrad (per-parameter accumulated squared gradients) or plain SGD.
    reg_linear, reg_factors : float, default=0.05
        L2 penalties of w and V, applied to the parameters each step touches (see above).
        The defaults (64 factors, penalties 0.05) were the best untuned setting on average
        over MovieLens 100K and ``make_recsys`` data, with ids, side features and implicit
        sets (``benchmarks/bench_defaults.py``; the table is in ``fmrec.recommend.defaults``).
        Users known only by their side features (cold start) did better with 0.01.
    init_std : float, default=0.01
        Standard deviation of the normal initialization of ``V_`` (columns that no user or
        item row uses start at 0).
    negative_sampling : {"uniform", "popularity"}, default="uniform"
        Uniform over the items, or item i with probability ∝ (n_i + 1)^0.75, n_i its number
        of training positives. Either way items in the user's ``seen`` row are rejected and
        redrawn; after 100 rejections in a row the positive is skipped for that epoch.
    n_candidates : int, default=5
        With more than 1, a hard-negative scheme (in the spirit of WARP): draw that many
        negatives, score them with the current parameters and train on the highest scoring
        one. 1 is plain BPR. On MovieLens 100K, 5 raised test NDCG@10 from 0.286 to 0.312
        with uniform sampling (``benchmarks/bench_ranker.py``), and at the defaults from
        0.269 to 0.317 (``benchmarks/bench_defaults.py``); it does not help popularity
        sampling.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the parameters and of the data copies.
    random_state : int, RandomState or None
        Seeds the initialization, the order of the positives and the per-thread samplers.
        With ``n_jobs=1`` training is bit-for-bit reproducible; Hogwild on several threads
        is not.
    n_jobs : int or None, default=1
        Threads (-1: every core). Several threads update the shared parameters without locks
        (Hogwild), except the columns that a large share of the triples step (side features
        such as gender, year or a common genre): each thread steps its own copy of those and
        adds its changes to the shared ones every 512 of its positives.
    warm_start : bool, default=False
        Continue from the fitted ``w_``, ``V_`` and AdaGrad sums on the next ``fit`` (which
        must use the same columns, ``dtype`` and ``n_factors``), extending ``history_``.
    verbose : int, default=0
        Log each epoch's figures to the ``fmrec`` logger.

    Attributes
    ----------
    w0_ : float
        Always 0.0: BPR does not identify it.
    w_ : ndarray of shape (n_features,)
    V_ : ndarray of shape (n_features, n_factors)
    history_ : dict of lists
        One value per epoch of ``train_loss`` (the mean BPR loss -ln σ(d) of the epoch's
        triples, each measured before its step), ``seconds``, ``n_skipped`` (positives
        without a negative), plus whatever the callbacks put in ``logs``.
    n_features_in_ : int
    n_epochs_ : int
        Epochs actually run.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from fmrec import FMRanker
    >>> n_users, n_items = 30, 20
    >>> U = sp.hstack([sp.eye(n_users), sp.csr_matrix((n_users, n_items))]).tocsr()
    >>> I = sp.hstack([sp.csr_matrix((n_items, n_users)), sp.eye(n_items)]).tocsr()
    >>> rng = np.random.default_rng(0)
    >>> users, items = rng.integers(0, n_users, 100), rng.integers(0, n_items, 100)
    >>> model = FMRanker(n_factors=4, n_epochs=3, random_state=0).fit(U, I, users, items)
    >>> model.score_matrix(U[:2], I).shape
    (2, 20)
    """

    def __init__(
        self,
        n_factors: int = 64,
        *,
        n_epochs: int = 30,
        learning_rate: float = 0.05,
        lr_schedule: str = "adagrad",
        reg_linear: float = 0.05,
        reg_factors: float = 0.05,
        init_std: float = 0.01,
        negative_sampling: str = "uniform",
        n_candidates: int = 5,
        dtype: str = "float32",
        random_state=None,
        n_jobs: int | None = 1,
        warm_start: bool = False,
        verbose: int = 0,
    ):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.reg_linear = reg_linear
        self.reg_factors = reg_factors
        self.init_std = init_std
        self.negative_sampling = negative_sampling
        self.n_candidates = n_candidates
        self.dtype = dtype
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.warm_start = warm_start
        self.verbose = verbose

    def _check_hyperparameters(self) -> None:
        v.check_interval("n_factors", self.n_factors, low=1, integer=True)
        v.check_interval("n_epochs", self.n_epochs, low=1, integer=True)
        v.check_interval("learning_rate", self.learning_rate, low=0, low_open=True)
        v.check_choice("lr_schedule", self.lr_schedule, {"adagrad", "constant"})
        v.check_interval("reg_linear", self.reg_linear, low=0)
        v.check_interval("reg_factors", self.reg_factors, low=0)
        v.check_interval("init_std", self.init_std, low=0)
        v.check_choice("negative_sampling", self.negative_sampling, {"uniform", "popularity"})
        v.check_interval("n_candidates", self.n_candidates, low=1, integer=True)
        v.check_interval("verbose", self.verbose, low=0, integer=True)
        v.resolve_dtype(self.dtype)
        v.resolve_n_jobs(self.n_jobs)

    # ------------------------------------------------------------------ fitting
    def fit(self, U, I, users, items, seen=None,  # noqa: E741
            callbacks: Sequence[Callback] | None = None):
        """Learn ``w_`` and ``V_`` from the positive pairs ``(users[t], items[t])``, starting afresh
        unless ``warm_start`` is set.

        Parameters
        ----------
        U : {sparse matrix, array-like} of shape (n_users, n_features)
            One row per user.
        I : {sparse matrix, array-like} of shape (n_items, n_features)
            One row per item, over the same columns as ``U``.
        users, items : integer array-likes of shape (n_positives,)
            The positives, as row positions in ``U`` and ``I``.
        seen : {sparse matrix, array-like} of shape (n_users, n_items), optional
            Non-zeros are items never to sample as a user's negatives (for instance every
            known interaction, validation included). The positives are always added to it.
        callbacks : sequence of callables, optional
            Each is called after every epoch as ``callback(estimator, epoch, logs)``, with
            ``w_`` and ``V_`` holding that epoch's parameters, ``history_`` and ``n_epochs_``
            including it and ``logs`` the epoch's figures (a callback may add keys, e.g. a
            validation metric, and they go to ``history_``); returning True stops training.

        Returns
        -------
        self
        """
        with restore_on_failure(self):
            self._fit_unsafe(U, I, users, items, seen, callbacks or ())
        return self

    def _fit_unsafe(self, U, I, users, items, seen, callbacks) -> None:  # noqa: E741
        self._check_hyperparameters()
        dtype = v.resolve_dtype(self.dtype)
        U = _check_rows(U, "U", dtype)
        I = _check_rows(I, "I", dtype)  # noqa: E741
        if U.shape[1] != I.shape[1]:
            raise ValueError(f"U and I must have the same number of columns (one feature "
                             f"space), got {U.shape[1]} and {I.shape[1]}")
        v.check_model_size(U.shape[1], self.n_factors, dtype)
        n_users, n_items = U.shape[0], I.shape[0]
        users = _check_positions(users, "users", n_users, "U")
        items = _check_positions(items, "items", n_items, "I")
        if len(users) != len(items):
            raise ValueError(f"users and items must have the same length, got {len(users)} "
                             f"and {len(items)}")
        if len(users) == 0:
            raise ValueError("no positives: users and items are empty")
        seen = _check_seen(seen, users, items, n_users, n_items)
        if (np.diff(seen.indptr)[users] >= n_items).all():
            # Every triple would be skipped and the loss would be NaN, silently.
            raise ValueError(f"no negatives to sample: every user with a positive has "
                             f"interacted with all {n_items} item(s), and BPR learns to rank "
                             "a positive above an item the user has not interacted with")
        U, I, seen = _common_index_dtype(U, I, seen)  # noqa: E741
        n_threads = v.resolve_n_jobs(self.n_jobs)
        rng = check_random_state(self.random_state)
        if self.warm_start and hasattr(self, "V_"):
            check_warm(self, dtype, U.shape[1], "U")
            state, accumulators = warm_state(self)
            # AdaGrad sums in the pointwise models' layout (w0's, w's, V's); w0's is unused.
            accumulators = accumulators[1:] if accumulators is not None else None
        else:
            state = FMState(0.0, *self._initial_parameters(U, I, users, dtype, rng))
            accumulators = None
            self.n_features_in_ = U.shape[1]
            self.history_ = {"train_loss": []}
        self.w0_ = 0.0
        hp = {"learning_rate": float(self.learning_rate), "lr_schedule": self.lr_schedule,
              "reg_linear": float(self.reg_linear), "reg_factors": float(self.reg_factors),
              "n_candidates": int(self.n_candidates),
              "negative_sampling": self.negative_sampling}
        solver = BPRSolver(U, I, users, items, seen, state, hp=hp, rng=rng,
                           n_threads=n_threads, accumulators=accumulators)
        self._publish(state)
        run_epochs(self, solver, state, _figures, n_epochs=int(self.n_epochs),
                   callbacks=callbacks)
        self._accumulators = (np.zeros(1, dtype), *solver.accumulators)

    def _initial_parameters(self, U, I, users, dtype, rng) -> tuple:  # noqa: E741
        """w = 0, V ~ N(0, init_std²) on the columns some user or item row uses, else 0."""
        n_features = U.shape[1]
        V = rng.normal(0.0, self.init_std, size=(n_features, self.n_factors)).astype(dtype)
        has_positive = np.zeros(U.shape[0], dtype=bool)
        has_positive[users] = True
        used = np.zeros(n_features, dtype=bool)
        used[U.indices[np.repeat(has_positive, np.diff(U.indptr))]] = True
        used[I.indices] = True
        V[~used] = 0
        return np.zeros(n_features, dtype), V

    def _publish(self, state: FMState) -> None:
        """Expose the live parameters (the kernel updates these arrays in place)."""
        self.w_ = state.w
        self.V_ = state.V

    # ------------------------------------------------------------------ scoring
    def parameter_sets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fitted parameters as one stacked set, as ``FMRegressor.parameter_sets`` gives
        them (w0s of shape (1,), ws (1, n_features), Vs (1, n_features, n_factors))."""
        check_is_fitted(self, "V_")
        return np.array([self.w0_]), self.w_[None], self.V_[None]

    def score(self, U_rows, I_rows) -> np.ndarray:
        """ŷ of the rows ``U_rows[r] + I_rows[r]``: one score per (user, item) pair.

        Parameters
        ----------
        U_rows, I_rows : {sparse matrix, array-like} of shape (n_pairs, n_features)
            The user and item rows of each pair, e.g. ``U[users]`` and ``I[items]``.

        Returns
        -------
        ndarray of shape (n_pairs,), float64
            The FM output (user-only terms included; they do not change a user's ranking).
        """
        check_is_fitted(self, "V_")
        dt = self.V_.dtype
        Ur, Ir = self._check_fitted_rows(U_rows, "U_rows"), self._check_fitted_rows(I_rows,
                                                                                       "I_rows")
        if Ur.shape[0] != Ir.shape[0]:
            raise ValueError(f"U_rows and I_rows must have as many rows, got {Ur.shape[0]} "
                             f"and {Ir.shape[0]}")
        X = v.as_kernel_csr((Ur + Ir).astype(dt))
        return predict_csr(X, self.w0_, self.w_, self.V_, v.resolve_n_jobs(self.n_jobs))

    def score_matrix(self, U_rows, I_rows) -> np.ndarray:
        """ŷ of ``U_rows[a] + I_rows[b]`` for every a and b: a dense (n_u, n_i) float64 array.

        Exact when user and item columns overlap: with t and q the within-row linear plus
        pairwise terms and factor sums, ``ŷ = t_u + t_i + q_u·q_i - Σ_c u_c i_c |v_c|²``.
        """
        check_is_fitted(self, "V_")
        Ur, Ir = self._check_fitted_rows(U_rows, "U_rows"), self._check_fitted_rows(I_rows,
                                                                                       "I_rows")
        w, V = self.w_.astype(np.float64), self.V_.astype(np.float64)
        t_u, q_u = part_terms(Ur, w, V)
        t_i, q_i = part_terms(Ir, w, V)
        S = q_u @ q_i.T
        S += np.asarray(t_u).ravel()[:, None] + self.w0_
        S += np.asarray(t_i).ravel()[None, :]
        overlap = Ur.multiply((V * V).sum(axis=1)[None, :]).tocsr() @ Ir.T
        if overlap.nnz:
            S -= overlap.toarray()
        return S

    def _check_fitted_rows(self, rows, name: str) -> sp.csr_matrix:
        rows = _check_rows(rows, name, np.float64, allow_empty=True)
        if rows.shape[1] != self.n_features_in_:
            raise ValueError(f"{name} has {rows.shape[1]} columns, but FMRanker was fitted "
                             f"with {self.n_features_in_}")
        return rows

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz, no pickle); ``fmrec.load_model`` reads it.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists; no suffix is added).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np, scipy.sparse as sp
        >>> from fmrec import FMRanker, load_model
        >>> U = sp.hstack([sp.eye(5), sp.csr_matrix((5, 4))]).tocsr()
        >>> I = sp.hstack([sp.csr_matrix((4, 5)), sp.eye(4)]).tocsr()
        >>> model = FMRanker(n_factors=2, n_epochs=2, random_state=0).fit(
        ...     U, I, [0, 1, 2, 3, 4], [0, 1, 2, 3, 0])
        >>> path = os.path.join(tempfile.mkdtemp(), "ranker.npz")
        >>> model.save(path)
        >>> np.array_equal(load_model(path).score_matrix(U, I), model.score_matrix(U, I))
        True
        """
        check_is_fitted(self, "V_")
        save_model(self, path)

    def _to_record(self) -> tuple[dict, dict]:
        """Arrays and JSON metadata of the fitted model (``fmrec.persistence``): the
        parameters, the history and the AdaGrad sums ``warm_start`` continues from."""
        return fm_record(self)

    @classmethod
    def _from_record(cls, meta: dict, arrays: dict) -> FMRanker:
        """The model ``_to_record`` described, every field and shape checked."""
        return restore_fm(cls, meta, arrays)[0]



def _figures(epoch: BPREpoch) -> dict:
    return {"train_loss": epoch.loss_sum / epoch.n_done if epoch.n_done else float("nan"),
            "seconds": epoch.seconds, "n_skipped": epoch.n_skipped}


def _check_rows(M, name: str, dtype, allow_empty: bool = False) -> sp.csr_matrix:
    """Canonical CSR of finite values without stored zeros."""
    if M is None:
        raise TypeError(f"{name} must be a sparse matrix or a 2-D array, got None")
    if not sp.issparse(M):
        arr = np.asarray(M)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
        M = arr
    elif M.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {M.shape}")
    M = sp.csr_matrix(M, dtype=dtype)
    if not allow_empty and (M.shape[0] == 0 or M.shape[1] == 0):
        raise ValueError(f"{name} is empty (shape {M.shape})")
    bad = ~np.isfinite(M.data)
    if bad.any():
        row = int(np.searchsorted(M.indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ValueError(f"{name} contains NaN or infinity (row {row})")
    M = v.as_kernel_csr(M)
    if (M.data == 0).any():
        M = M.copy()
        M.eliminate_zeros()
    return M


def _check_positions(values, name: str, n_rows: int, matrix: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer row positions, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_rows):
        bad = int(np.flatnonzero((arr < 0) | (arr >= n_rows))[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]} is not a row of {matrix} "
                         f"(it has {n_rows} rows)")
    return np.ascontiguousarray(arr)


def _check_seen(seen, users, items, n_users: int, n_items: int) -> sp.csr_matrix:
    pairs = sp.csr_matrix((np.ones(len(users), np.int8), (users, items)),
                          shape=(n_users, n_items))
    if seen is not None:
        if not sp.issparse(seen):
            seen = np.asarray(seen)
            if seen.ndim != 2:
                raise ValueError(f"seen must be 2-D, got shape {seen.shape}")
        if seen.shape != (n_users, n_items):
            raise ValueError(f"seen must have shape (n_users, n_items) = ({n_users}, "
                             f"{n_items}), got {seen.shape}")
        seen = sp.csr_matrix(seen)
        seen = sp.csr_matrix((seen != 0).astype(np.int8))
        pairs = pairs + seen
    pairs = sp.csr_matrix(pairs)
    pairs.sum_duplicates()
    pairs.sort_indices()
    return pairs


def _common_index_dtype(*matrices):
    """The matrices with indptr/indices all int32, or all int64 if any needs it."""
    big = any(M.indices.dtype == np.int64 and max(M.nnz, max(M.shape)) > np.iinfo(np.int32).max
              for M in matrices)
    dt = np.int64 if big else np.int32
    out = []
    for M in matrices:
        if M.indices.dtype != dt or M.indptr.dtype != dt:
            M = M.copy()
            M.indices = M.indices.astype(dt)
            M.indptr = M.indptr.astype(dt)
        out.append(M)
    return out
