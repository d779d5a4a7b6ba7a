"""Saving and loading fitted models: one .npz file, arrays plus a JSON metadata record.

Nothing is ever unpickled: files are read with ``allow_pickle=False``, so loading a file from
an untrusted source cannot run code; a foreign or damaged file raises ``ValueError``.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

FORMAT = "fmrec-model"
FORMAT_VERSION = 2  # the newest this fmrec reads and writes
# Version 2 adds MCMC samples. Files without them still say 1, so older fmrec reads them;
# an older fmrec refuses a file with samples instead of predicting from the last one.
_PLAIN_VERSION = 1

_FITTED_ARRAYS = ("w_", "V_")
_OPTIONAL_ARRAYS = ("classes_", "feature_names_in_")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None  # e.g. a RandomState object: not restorable, the loaded model gets None


def save_estimator(estimator, path) -> None:
    """Write ``estimator`` (an FMRegressor, FMClassifier or FMRanker) to ``path``."""
    arrays, meta = _estimator_record(estimator)
    _write(path, arrays, meta)


def save_recommender(recommender, path) -> None:
    """Write a fitted ``Recommender``: its model's arrays under ``model.``, its encoders,
    tables and seen matrix, and one metadata record holding both parts' metadata."""
    from fmrec import __version__

    model_arrays, model_meta = _estimator_record(recommender.model_)
    arrays, params = recommender._state()
    arrays.update({f"model.{key}": value for key, value in model_arrays.items()})
    meta = {
        "format": FORMAT,
        "format_version": model_meta["format_version"],
        "fmrec_version": __version__,
        "class": "Recommender",
        "params": params,
        "model": model_meta,
    }
    _write(path, arrays, meta)


def _write(path, arrays: dict, meta: dict) -> None:
    arrays = dict(arrays, metadata=np.array(json.dumps(meta)))
    with open(os.fspath(path), "wb") as fh:  # a file handle keeps numpy from appending .npz
        np.savez(fh, **arrays)


def _estimator_record(estimator) -> tuple[dict, dict]:
    """The arrays and the JSON metadata of a fitted FMRegressor or FMClassifier."""
    from fmrec import __version__

    arrays = {name.rstrip("_"): np.asarray(getattr(estimator, name)) for name in _FITTED_ARRAYS}
    for name in _OPTIONAL_ARRAYS:
        if hasattr(estimator, name):
            arr = np.asarray(getattr(estimator, name))
            if name == "feature_names_in_":
                arr = arr.astype(str)
            if arr.dtype.kind not in "biufU":
                raise TypeError(f"cannot save {name} of dtype {arr.dtype} without pickle; use "
                                "labels that are numbers, booleans or strings")
            arrays[name.rstrip("_")] = arr
    for name, values in estimator.history_.items():
        arrays[f"history.{name}"] = np.asarray(values, dtype=np.float64)
    accumulators = getattr(estimator, "_accumulators", None)
    if accumulators is not None:
        arrays.update(zip(("acc_w0", "acc_w", "acc_V"), accumulators, strict=True))
    arrays.update(_mcmc_arrays(estimator))
    fitted = {"w0": float(estimator.w0_), "n_features_in": int(estimator.n_features_in_),
              "n_epochs": int(estimator.n_epochs_)}
    for name in ("y_range_", "best_epoch_"):
        if hasattr(estimator, name):
            fitted[name.rstrip("_")] = _jsonable_deep(getattr(estimator, name))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if "mcmc.samples_w0" in arrays else _PLAIN_VERSION,
        "fmrec_version": __version__,
        "class": type(estimator).__name__,
        "params": {k: _jsonable(val) for k, val in estimator.get_params(deep=False).items()},
        "fitted": fitted,
    }
    return arrays, meta


# A model fitted by MCMC also keeps its retained samples, the chain's hyperparameters and
# groups (to continue sampling with warm_start), and a ``groups`` parameter given as an array.
_SAMPLE_ARRAYS = ("samples_w0_", "samples_w_", "samples_V_", "samples_alpha_")


def _mcmc_arrays(estimator) -> dict:
    arrays = {}
    if getattr(estimator, "_mcmc_hyper", None) is not None:
        for name in _SAMPLE_ARRAYS:
            arrays[f"mcmc.{name.rstrip('_')}"] = np.asarray(getattr(estimator, name))
        arrays["mcmc.groups"] = np.asarray(estimator._mcmc_groups)
        for key, value in estimator._mcmc_hyper.items():
            arrays[f"mcmc.hyper.{key}"] = np.asarray(value, dtype=np.float64)
    groups = getattr(estimator, "groups", None)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.dtype.kind not in "iuf":
            raise TypeError(f"cannot save groups of dtype {groups.dtype}")
        arrays["param.groups"] = groups
    return arrays


def _restore_mcmc(model, arrays) -> None:
    if "param.groups" in arrays:
        model.groups = arrays["param.groups"]
    if "mcmc.samples_w0" not in arrays:
        return
    n, (d, k) = model.n_features_in_, model.V_.shape
    w0s, ws, Vs = (arrays[f"mcmc.samples_{x}"] for x in ("w0", "w", "V"))
    s = len(w0s)
    if ws.shape != (s, n) or Vs.shape != (s, d, k) or arrays["mcmc.samples_alpha"].shape != (s,):
        raise ValueError(f"inconsistent MCMC sample shapes: w {ws.shape}, V {Vs.shape}")
    model.samples_w0_, model.samples_w_, model.samples_V_ = w0s, ws, Vs
    model.samples_alpha_ = arrays["mcmc.samples_alpha"]
    model._mcmc_groups = arrays["mcmc.groups"].astype(np.int32)
    model._mcmc_hyper = {key.split(".", 2)[2]: arrays[key] for key in arrays
                         if key.startswith("mcmc.hyper.")}


def _jsonable_deep(value):
    if isinstance(value, tuple | list):
        return [_jsonable(x) for x in value]
    return _jsonable(value)


def _model_classes():
    from fmrec.models.fm import FMClassifier, FMRegressor
    from fmrec.models.ranker import FMRanker

    return {cls.__name__: cls for cls in (FMRegressor, FMClassifier, FMRanker)}


def load_model(path):
    """Read a model written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike
        File written by ``FMRegressor.save``, ``FMClassifier.save`` or ``Recommender.save``.

    Returns
    -------
    FMRegressor, FMClassifier or Recommender
        The fitted estimator, ready to predict (recommend) or to continue training.

    Raises
    ------
    ValueError
        If the file is not an fmrec model, is damaged, or comes from a newer format.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from fmrec import FMRegressor, load_model
    >>> X, y = np.eye(4), np.arange(4.0)
    >>> model = FMRegressor(n_factors=2, n_epochs=2, random_state=0).fit(X, y)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> model.save(path)
    >>> np.allclose(load_model(path).predict(X), model.predict(X))
    True
    """
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{name} is not a readable fmrec model file: {exc}") from exc
    if "metadata" not in arrays:
        raise ValueError(f"{name} is not an fmrec model file (no metadata record)")
    try:
        meta = json.loads(str(arrays.pop("metadata")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: the metadata record is damaged: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{name} is not an fmrec model file")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{name} has format version {meta['format_version']}; this fmrec "
                         f"reads up to {FORMAT_VERSION}: upgrade fmrec")
    classes = _model_classes()
    if meta.get("class") not in (*classes, "Recommender"):
        raise ValueError(f"{name} holds an unknown model class {meta.get('class')!r}")
    try:
        if meta["class"] == "Recommender":
            return _restore_recommender(meta, arrays, classes)
        return _restore(classes[meta["class"]], meta, arrays)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{name} is damaged: {exc!r}") from exc


def _restore_recommender(meta, arrays, classes):
    from fmrec.recommend.recommender import Recommender

    model_meta = meta["model"]
    if model_meta.get("class") not in classes:
        raise ValueError(f"unknown model class {model_meta.get('class')!r} in a Recommender")
    head = "model."
    model = _restore(classes[model_meta["class"]], model_meta,
                     {key[len(head):]: value for key, value in arrays.items()
                      if key.startswith(head)})
    return Recommender._from_state(meta["params"], arrays, model)


def _restore(cls, meta, arrays):
    model = cls(**meta["params"])
    fitted = meta["fitted"]
    w, V = arrays["w"], arrays["V"]
    n = int(fitted["n_features_in"])
    if w.shape != (n,) or V.ndim != 2 or V.shape[0] != n or V.dtype != w.dtype:
        raise ValueError(f"inconsistent parameter shapes: w {w.shape}, V {V.shape}, "
                         f"n_features_in {n}")
    if V.dtype not in (np.float32, np.float64):
        raise ValueError(f"parameters have unsupported dtype {V.dtype}")
    if not (np.isfinite(w).all() and np.isfinite(V).all() and np.isfinite(fitted["w0"])):
        raise ValueError("parameters contain NaN or inf")
    model.w0_, model.w_, model.V_ = float(fitted["w0"]), w.copy(), np.ascontiguousarray(V)
    model.n_features_in_ = n
    model.n_epochs_ = int(fitted["n_epochs"])
    model.history_ = {key.split(".", 1)[1]: arrays[key].tolist()
                      for key in arrays if key.startswith("history.")}

    if "y_range" in fitted:
        model.y_range_ = tuple(float(x) for x in fitted["y_range"])
    if "best_epoch" in fitted:
        model.best_epoch_ = int(fitted["best_epoch"])
    if "classes" in arrays:
        model.classes_ = arrays["classes"]
    if "feature_names_in" in arrays:
        model.feature_names_in_ = arrays["feature_names_in"].astype(object)
    if "acc_V" in arrays:
        model._accumulators = (arrays["acc_w0"], arrays["acc_w"], arrays["acc_V"])
    _restore_mcmc(model, arrays)
    return model
