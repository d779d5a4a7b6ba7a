"""What every fitted FM writes to a model file: w0, w, V, its epoch count, ``history_`` and
the AdaGrad sums that ``warm_start`` continues from.

Each model class adds its own state to this record (``_to_record`` / ``_from_record``);
``fmrec.persistence`` wraps records in the file format.
"""

from __future__ import annotations

import numpy as np

from fmrec.persistence import check_array, check_fields, jsonable

FITTED_FIELDS = {"w0": "number", "n_features_in": "count", "n_epochs": "count"}
ACCUMULATORS = ("acc_w0", "acc_w", "acc_V")  # AdaGrad's squared-gradient sums of w0, w, V


def fm_record(model) -> tuple[dict, dict]:
    """The arrays (``w``, ``V``, ``history.<key>``) and the metadata (``params``, and
    ``fitted``: ``w0``, ``n_features_in``, ``n_epochs``) of a fitted FM."""
    arrays = {"w": np.asarray(model.w_), "V": np.asarray(model.V_)}
    for key, values in model.history_.items():
        arrays[f"history.{key}"] = np.asarray(values, dtype=np.float64)
    if getattr(model, "_accumulators", None) is not None:
        arrays.update(zip(ACCUMULATORS, model._accumulators, strict=True))
    params = {key: jsonable(value) for key, value in model.get_params(deep=False).items()}
    fitted = {"w0": float(model.w0_), "n_features_in": int(model.n_features_in_),
              "n_epochs": int(model.n_epochs_)}
    return arrays, {"params": params, "fitted": fitted}


def restore_fm(cls, meta: dict, arrays: dict, optional: dict[str, str] | None = None):
    """``(model, fitted)``: a ``cls`` built from the record's params, with the parameters,
    the epoch count and ``history_`` restored; ``fitted`` is the checked ``fitted`` record
    (``optional`` names the kinds of its further fields)."""
    fitted = check_fields(meta.get("fitted"), "fitted", FITTED_FIELDS, optional)
    n = fitted["n_features_in"]
    w = check_array(arrays, "w", (n,))
    V = check_array(arrays, "V", (n, None))
    if V.dtype != w.dtype or V.dtype not in (np.float32, np.float64):
        raise ValueError(f"inconsistent parameter dtypes: w {w.dtype}, V {V.dtype} (float32 "
                         "or float64, both alike)")
    if not (np.isfinite(w).all() and np.isfinite(V).all() and np.isfinite(fitted["w0"])):
        raise ValueError("the parameters contain NaN or inf")
    if fitted["n_epochs"] or "history.train_loss" in arrays:  # one loss per epoch run
        check_array(arrays, "history.train_loss", (fitted["n_epochs"],))
    model = cls(**meta["params"])
    try:
        model._check_hyperparameters()
    except TypeError as exc:
        raise ValueError(f"params: {exc}") from exc
    model.w0_, model.w_, model.V_ = float(fitted["w0"]), w.copy(), np.ascontiguousarray(V)
    model.n_features_in_ = n
    model.n_epochs_ = fitted["n_epochs"]
    head = "history."
    model.history_ = {key[len(head):]: check_array(arrays, key, (None,)).tolist()
                      for key in arrays if key.startswith(head)}
    if any(key.startswith("acc_") for key in arrays):
        k = model.V_.shape[1]
        acc = tuple(check_array(arrays, name, shape) for name, shape in
                    zip(ACCUMULATORS, ((1,), (n,), (n, k)), strict=True))
        if any(a.dtype != model.V_.dtype for a in acc):
            raise ValueError(f"the AdaGrad sums must be of the parameters' dtype {model.V_.dtype}")
        model._accumulators = acc
    return model, fitted
