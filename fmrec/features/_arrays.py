"""FeatureEncoder's parameters and fitted state as named arrays of numbers and strings (for
``np.savez`` without pickle), and back; keys that older files lack read as those versions
behaved."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmrec._validation import resolve_dtype
from fmrec.features._vocabulary import (
    KINDS,
    Bins,
    Vocabulary,
    from_str,
    to_str,
    vocab_kind,
)


def state_arrays(params: dict, state: dict) -> dict[str, np.ndarray]:
    """Arrays of an encoder's ``get_params()`` and fitted ``_state()``."""
    fields = state["fields"]
    field_kind = vocab_kind(np.array(fields, dtype=object), "<field names>")
    out = {
        "fields": to_str(np.array(fields, dtype=object), field_kind),
        "fields_kind": np.array(field_kind),
        "kinds": np.array(state["kinds"], dtype=str),
        "handle_unknown": np.array(str(params["handle_unknown"])),
        "min_frequency": np.array(-1 if params["min_frequency"] is None
                                  else int(params["min_frequency"]), dtype=np.int64),
        "standardize": np.array(bool(params["standardize"])),
        "delimiter": np.array(params["delimiter"]),
        "dtype": np.array(np.dtype(resolve_dtype(params["dtype"])).name),
        "normalize": np.array(state["norms"], dtype=str),
        "means": np.asarray(state["means"], dtype=np.float64),
        "stds": np.asarray(state["stds"], dtype=np.float64),
        "missing": np.array(state["missing"], dtype=bool),
        "fills": np.asarray(state["fills"], dtype=np.float64),
        "drop_unique": np.array(bool(params["drop_unique"])),
    }
    if state["dropped"]:
        dropped = np.array(state["dropped"], dtype=object)
        dropped_kind = vocab_kind(dropped, "<dropped column names>")
        out["dropped"] = to_str(dropped, dropped_kind)
        out["dropped_kind"] = np.array(dropped_kind)
    for i, vocab in enumerate(state["vocabs"]):
        if vocab is None:
            continue
        if isinstance(vocab, Bins):
            out[f"bins_{i}"] = vocab.edges.copy()
            continue
        kind = vocab_kind(vocab.categories, fields[i])
        out[f"vocab_{i}"] = to_str(vocab.categories, kind)
        out[f"vocab_kind_{i}"] = np.array(kind)
        out[f"local_{i}"] = vocab.local.copy()
        out[f"n_local_{i}"] = np.array([vocab.n_local, vocab.has_infrequent], dtype=np.int64)
    return out


def read_state(arrays) -> tuple[dict, dict]:
    """The constructor parameters and the ``_set_state`` arguments of ``state_arrays``
    output (a dict or an ``np.load`` result)."""
    a = {k: np.asarray(arrays[k]) for k in arrays}
    fields = from_str(a["fields"], str(a["fields_kind"])).tolist()
    kinds = [str(k) for k in a["kinds"]]
    by_kind = {k: [f for f, fk in zip(fields, kinds, strict=True) if fk == k] for k in KINDS}
    mf = int(a["min_frequency"])
    # Files written before ``normalize`` existed hold sum-normalized fields only.
    norms = ([str(x) for x in a["normalize"]] if "normalize" in a
             else ["sum" if k == "multi_valued" else "" for k in kinds])
    modes = {f: m for f, m, k in zip(fields, norms, kinds, strict=True) if k == "multi_valued"}
    normalize = modes.popitem()[1] if len(set(modes.values())) == 1 else modes or "sum"
    # Files written before ``bins`` existed have no bins_<i> arrays: nothing is binned.
    edges = {i: a[f"bins_{i}"].astype(np.float64) for i in range(len(fields))
             if f"bins_{i}" in a}
    # Files written before missing values were encoded have no missing-value features, no
    # dropped columns, and impute with the mean they standardize by (0 if they do not: their
    # fit mean was not stored).
    missing = a["missing"].astype(bool).tolist() if "missing" in a else None
    fills = (a["fills"] if "fills" in a else a["means"]).astype(np.float64)
    dropped = (from_str(a["dropped"], str(a["dropped_kind"])).tolist() if "dropped" in a
               else [])
    params = dict(by_kind, normalize=normalize, handle_unknown=str(a["handle_unknown"]),
                  min_frequency=None if mf < 0 else mf, standardize=bool(a["standardize"]),
                  delimiter=str(a["delimiter"]), dtype=np.dtype(str(a["dtype"])).type,
                  bins={fields[i]: e.tolist() for i, e in edges.items()} or None,
                  drop_unique=bool(a["drop_unique"]) if "drop_unique" in a else False)
    # A dropped column is listed as it was configured: refitting drops it again.
    params["categorical"] = by_kind["categorical"] + dropped
    vocabs = []
    for i, kind in enumerate(kinds):
        if kind == "numeric":
            vocabs.append(Bins(edges[i]) if i in edges else None)
            continue
        n_local, has_infrequent = a[f"n_local_{i}"].tolist()
        categories = from_str(a[f"vocab_{i}"], str(a[f"vocab_kind_{i}"]))
        _check_vocabulary(fields[i], categories, a[f"local_{i}"], n_local)
        vocabs.append(Vocabulary(categories, a[f"local_{i}"], n_local, bool(has_infrequent)))
    for name in ("means", "stds", "fills"):
        if len(a[name] if name != "fills" else fills) != len(fields):
            raise ValueError(f"the encoder's {name} do not match its {len(fields)} fields")
    state = {"fields": fields, "kinds": kinds, "vocabs": vocabs,
             "means": a["means"].astype(np.float64), "stds": a["stds"].astype(np.float64),
             "norms": norms, "missing": missing, "fills": fills, "dropped": dropped}
    return params, state


def _check_vocabulary(field, categories: np.ndarray, local: np.ndarray, n_local: int) -> None:
    """A vocabulary read from a file: distinct values, each mapped into [0, n_local)."""
    if local.dtype.kind not in "iu" or local.shape != categories.shape:
        raise ValueError(f"the vocabulary of field {field!r} has {len(categories)} values but "
                         f"{local.size} feature indices")
    if len(local) and (local.min() < 0 or local.max() >= n_local):
        raise ValueError(f"the vocabulary of field {field!r} maps values outside its "
                         f"{n_local} features")
    if not pd.Index(categories).is_unique:
        raise ValueError(f"the vocabulary of field {field!r} repeats a value")
