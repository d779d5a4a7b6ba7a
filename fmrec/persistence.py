"""Model files: one .npz of named arrays plus a JSON metadata record, and the class registry.

This module knows the file format only; every model turns its own state into a record and
back (``_to_record`` / ``_from_record``) and registers its class with :func:`register`, so
:func:`load_model` finds it by the name the file gives. It imports no model: models import it.

A record is ``(arrays, meta)``: a dict of name → ndarray and a JSON-able dict holding at least
``params`` (the constructor's arguments). On disk the metadata is wrapped in an envelope,
``{"format": "fmrec-model", "format_version", "fmrec_version", "class", ...}``, and stored as
the array ``metadata``. A model inside another (a Recommender's) is a record with its own
envelope under the key ``model`` and its arrays prefixed ``model.``.

Nothing is ever unpickled: files are read with ``allow_pickle=False``, so loading a file from
an untrusted source cannot run code. The metadata is checked against its schema before any
array is used, and a foreign or damaged file raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile

import numpy as np

from fmrec._version import __version__

FORMAT = "fmrec-model"
# Version 1: parameters, training state, encoders. Version 2 adds MCMC samples; a file
# without them still says 1, so an older fmrec reads it, while an older fmrec refuses a file
# with samples instead of predicting from the last one. The reader takes any version up to
# FORMAT_VERSION.
PLAIN_VERSION = 1
SAMPLES_VERSION = 2
FORMAT_VERSION = SAMPLES_VERSION

_ARRAY_KINDS = "biufU"  # bool, integers, floats, str: nothing that needs pickle
_READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError)
_CLASSES: dict[str, type] = {}


# ---------------------------------------------------------------------------- the registry
def register(cls: type) -> type:
    """Class decorator: make ``cls`` loadable by :func:`load_model` under its name.

    The class provides ``_to_record(self) -> (arrays, meta)`` and the classmethod
    ``_from_record(cls, meta, arrays)``; ``meta`` holds its ``params`` (constructor
    arguments) and may ask for a ``format_version`` above ``PLAIN_VERSION``.
    """
    for method in ("_to_record", "_from_record"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__name__} cannot be registered: it has no {method}")
    known = _CLASSES.get(cls.__name__)
    if known is not None and _qualified(known) != _qualified(cls):
        raise ValueError(f"two model classes named {cls.__name__!r}: {_qualified(known)} "
                         f"and {_qualified(cls)}")
    _CLASSES[cls.__name__] = cls
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered() -> dict[str, type]:
    """The loadable classes by name (a copy)."""
    return dict(_CLASSES)


# ---------------------------------------------------------------------------- records
def to_record(obj) -> tuple[dict, dict]:
    """``obj``'s arrays and its metadata inside the envelope (format, version, class)."""
    arrays, meta = obj._to_record()
    meta = dict(meta)
    version = meta.pop("format_version", PLAIN_VERSION)
    head = {"format": FORMAT, "format_version": version, "fmrec_version": __version__,
            "class": type(obj).__name__}
    return arrays, {**head, **meta}


def from_record(meta, arrays: dict, base: type | tuple[type, ...] | None = None):
    """The object a record describes, its envelope checked first.

    ``base`` restricts the classes accepted (e.g. a Recommender's model); the class's own
    ``_from_record`` checks its fields and arrays.
    """
    cls = _check_envelope(meta, base)
    return cls._from_record(meta, arrays)


def _check_envelope(meta, base) -> type:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not an fmrec model file (its metadata has no "
                         f"format={FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version}: this fmrec reads up to {FORMAT_VERSION}; "
                         "upgrade fmrec")
    if version < PLAIN_VERSION:
        raise ValueError(f"format_version must be at least {PLAIN_VERSION}, got {version}")
    if not isinstance(meta.get("fmrec_version", ""), str):  # informative only
        raise ValueError(f"fmrec_version must be a string, got {meta['fmrec_version']!r}")
    name = meta.get("class")
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None or (base is not None and not issubclass(cls, base)):
        raise ValueError(f"unknown model class {name!r}"
                         + ("" if base is None else f" (expected {_names(base)})"))
    params = meta.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"params must be a JSON object, got {params!r}")
    accepted = inspect.signature(cls).parameters
    unknown = sorted(str(key) for key in params if key not in accepted)
    if unknown:
        raise ValueError(f"params has names {cls.__name__} does not take: {unknown}")
    return cls


def _names(base) -> str:
    return " or ".join(cls.__name__ for cls in (base if isinstance(base, tuple) else (base,)))


def nested_arrays(arrays: dict, prefix: str) -> dict:
    """The arrays whose names start with ``prefix + "."``, without it."""
    head = f"{prefix}."
    return {key[len(head):]: value for key, value in arrays.items() if key.startswith(head)}


# ---------------------------------------------------------------------------- the schema
_KINDS = {
    "int": "an integer",
    "count": "a non-negative integer",
    "number": "a number",
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "a JSON object",
}


def _is(value, kind: str) -> bool:
    if kind in ("int", "count"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok and (kind == "int" or value >= 0)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "bool": bool, "list": list, "dict": dict}[kind])


def check_fields(record, where: str, required: dict[str, str],
                 optional: dict[str, str] | None = None) -> dict:
    """``record`` itself after checking it is a JSON object whose ``required`` keys are all
    there and whose keys (``optional`` ones included) hold values of the kinds named:
    "int", "count" (non-negative int), "number", "str", "bool", "list" or "dict"."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a JSON object, got {record!r}")
    for key in required:
        if key not in record:
            raise ValueError(f"{where} lacks {key!r}")
    for key, kind in {**required, **(optional or {})}.items():
        if key in record and not _is(record[key], kind):
            raise ValueError(f"{where}.{key} must be {_KINDS[kind]}, got {record[key]!r}")
    return record


def check_array(arrays: dict, name: str, shape: tuple, kinds: str = "f") -> np.ndarray:
    """``arrays[name]`` after checking its dtype kind (numpy's letters) and its shape
    (``None`` matches any length)."""
    if name not in arrays:
        raise ValueError(f"the array {name!r} is missing")
    arr = arrays[name]
    if arr.dtype.kind not in kinds:
        raise ValueError(f"the array {name!r} has dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(want is not None and got != want
                                     for got, want in zip(arr.shape, shape, strict=True)):
        want = tuple("any" if n is None else n for n in shape)
        raise ValueError(f"inconsistent shape of the array {name!r}: {arr.shape}, expected "
                         f"{want}")
    return arr


def jsonable(value):
    """``value`` as JSON holds it: numpy scalars as Python ones, and None for anything else
    (e.g. a RandomState: the loaded model gets None; arrays go to the arrays instead)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None


# ---------------------------------------------------------------------------- files
def save_model(obj, path) -> None:
    """Write a registered object (a fitted model) to ``path`` as one .npz file."""
    if _CLASSES.get(type(obj).__name__) is not type(obj):
        raise TypeError(f"{_qualified(type(obj))} is not a registered model class")
    arrays, meta = to_record(obj)
    for key, arr in arrays.items():
        if np.asarray(arr).dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"cannot save the array {key!r} of dtype {np.asarray(arr).dtype} "
                            "without pickle")
    arrays = dict(arrays, metadata=np.array(json.dumps(meta)))
    with open(os.fspath(path), "wb") as fh:  # a file handle keeps numpy from appending .npz
        np.savez(fh, **arrays)


def load_model(path):
    """Read a model written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike
        File written by the ``save`` method of ``FMRegressor``, ``FMClassifier``,
        ``FMRanker``, ``Recommender`` or their Dask twins.

    Returns
    -------
    FMRegressor, FMClassifier, FMRanker or Recommender
        The fitted model, ready to predict (recommend) or to continue training.

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
        npz = np.load(name, allow_pickle=False)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as exc:
        raise ValueError(f"{name} is not a readable fmrec model file: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{name} is not a readable fmrec model file: it holds one .npy "
                         "array, not an .npz archive")
    with npz:
        if "metadata" not in npz.files:
            raise ValueError(f"{name} is not an fmrec model file (no metadata record)")
        meta = _metadata(name, _entry(name, npz, "metadata"))
        try:  # the envelope first: a foreign file's arrays are never read
            _check_envelope(meta, None)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
        arrays = {key: _entry(name, npz, key) for key in npz.files if key != "metadata"}
    try:
        return from_record(meta, arrays)
    except ValueError as exc:
        raise ValueError(f"{name} is damaged: {exc}") from exc
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{name} is damaged: {exc!r}") from exc


def _entry(name: str, npz, key: str) -> np.ndarray:
    """One array of the archive: numbers, booleans or str (never an object array)."""
    try:
        arr = npz[key]
    except _READ_ERRORS as exc:
        raise ValueError(f"{name} is not a readable fmrec model file: {exc}") from exc
    if arr.dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"{name} is damaged: the array {key!r} has dtype {arr.dtype}")
    return arr


def _metadata(name: str, record: np.ndarray) -> dict:
    if record.dtype.kind != "U" or record.ndim != 0:
        raise ValueError(f"{name} is damaged: the metadata record is not a string")
    try:
        meta = json.loads(str(record))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: the metadata record is damaged: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{name} is not an fmrec model file")
    return meta
