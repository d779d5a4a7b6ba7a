"""Building FeatureEncoder's CSR output: per-field parts written into one preallocated
matrix (no per-field matrices, no hstack), and the canonical block of multi-valued tokens."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

# Rows per step when copying multi-valued entries into the matrix: bounds the temporaries
# whatever the number of tokens per row.
CHUNK_ROWS = 1 << 16

def index_dtype(maxval: int) -> type:
    return np.int32 if maxval <= np.iinfo(np.int32).max else np.int64


class Part(NamedTuple):
    """One field of a transform (or one of its runs of features), before it is written into
    the matrix.

    With ``start`` None a row has one entry (at most one where the bool ``count`` is True):
    local feature ``cols[r]`` (0 when None) of value ``data[r]`` (1 when None). Otherwise row
    ``r`` has ``count[r]`` entries, ``cols``/``data`` ``[start[r]:start[r] + count[r]]``.
    """

    count: np.ndarray | None
    start: np.ndarray | None
    cols: np.ndarray | None
    data: np.ndarray | None


def assemble(parts: list[Part], starts: list[int], n: int, n_features: int,
             dtype) -> sp.csr_matrix:
    """The canonical CSR of ``parts``, written in place part by part.

    Part ``i``'s local feature 0 is column ``starts[i]``. Parts are in feature order, their
    columns do not overlap and each is sorted and duplicate-free within a row, so appending
    them row by row gives sorted indices without a sort or an hstack copy.
    """
    nnz = sum(n if p.count is None else int(p.count.sum()) for p in parts)
    itype = index_dtype(max(nnz, n_features))
    cursor = np.zeros(n, dtype=itype)  # first the row lengths, then the write positions
    for p in parts:
        cursor += 1 if p.count is None else p.count
    indptr = np.zeros(n + 1, dtype=itype)
    np.cumsum(cursor, out=indptr[1:])
    cursor[:] = indptr[:-1]
    indices = np.empty(nnz, dtype=itype)
    data = np.ones(nnz, dtype=dtype)
    for i, offset in enumerate(starts):
        p, parts[i] = parts[i], None  # drop each field's codes once written
        if p.start is None:
            pos, cols, values = cursor, p.cols, p.data
            if p.count is not None:
                pos = cursor[p.count]
                cols = None if cols is None else cols[p.count]
                values = None if values is None else values[p.count]
            if cols is not None:
                cols = cols.astype(itype, copy=False)
                cols += offset  # in place: the part's codes are not used again
            indices[pos] = offset if cols is None else cols
            if values is not None:
                data[pos] = values
            cursor += 1 if p.count is None else p.count
            continue
        for lo in range(0, n, CHUNK_ROWS):
            count, start = p.count[lo:lo + CHUNK_ROWS], p.start[lo:lo + CHUNK_ROWS]
            m = int(count.sum())
            if not m:
                continue
            # Entry k of row r: source start[r] + k, destination cursor[r] + k.
            src = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(m)
            dst = np.repeat(cursor[lo:lo + CHUNK_ROWS] - start, count) + src
            cols = p.cols[src].astype(itype, copy=False)
            cols += offset
            indices[dst] = cols
            data[dst] = p.data[src]
        cursor += p.count
    del p, cursor
    X = sp.csr_matrix((data, indices, indptr), shape=(n, n_features))
    # Sorted and duplicate-free by construction: say so rather than have scipy rescan.
    X.has_sorted_indices = True
    X.has_canonical_format = True
    return X


def token_block(rows, cols, n_rows: int, n_cols: int, dtype,
                 norm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical CSR arrays (indptr, indices, data) of tokens ``cols`` in ``rows``."""
    # Sort by (row, col) and merge repeats ("A|A", or two infrequent tokens) so the
    # block is canonical; each token weighs 1/n, 1/√n or 1 (n: known tokens in its row).
    if n_rows * n_cols < 2**62:
        # Rows come sorted, so a stable sort of one (row, col) key mostly meets long
        # runs: ~20x faster than lexsort on a million rows.
        order = np.argsort(rows.astype(np.int64) * n_cols + cols, kind="stable")
    else:
        order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    del order
    per_row = np.bincount(rows, minlength=n_rows)[rows].astype(np.float64)
    if norm == "sum":
        weight = 1.0 / per_row
    elif norm == "sqrt":
        weight = 1.0 / np.sqrt(per_row)
    else:
        weight = np.ones_like(per_row)
    del per_row
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    starts = np.flatnonzero(first)
    data = np.add.reduceat(weight, starts) if len(starts) else weight
    rows, cols = rows[starts], cols[starts]
    indptr = np.zeros(n_rows + 1, dtype=index_dtype(len(cols)))
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols, data.astype(dtype)
