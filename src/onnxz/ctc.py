"""Greedy CTC strings: what a text recognizer's per-position class scores decide.

A CTC recognizer outputs one row of class scores per position; its string is the argmax
path with repeats merged and the *blank* class dropped. Many argmax changes leave that
string alone (a blank taking a neighbour's letter, a repeat becoming blank), so a string
metric judges a recognizer by what it reads, not by every position.

The blank is not named in the model; it is the class the original's argmax path takes
most often (CTC paths are mostly blank: PaddleOCR's and PyTorch's blank is 0, others use
the last class, and every one dominates its paths).

>>> path = np.array([0, 3, 3, 0, 0, 5, 0, 5])
>>> greedy_string(path, blank=0)
(3, 5, 5)
>>> harmless_alternatives(path, blank=0)[1:5].tolist()  # (left, right, blank)
[[-1, -1, 0], [-1, -1, 0], [3, -1, -1], [-1, 5, -1]]
"""

from __future__ import annotations

import numpy as np


def blank_class(paths: list[np.ndarray]) -> int:
    """The class the argmax paths take most often (the smallest such class on a tie; 0 for
    no positions)."""
    flat = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in paths] or
                          [np.zeros(0, np.int64)])
    if not flat.size:
        return 0
    classes, counts = np.unique(flat, return_counts=True)  # any integers: class labels too
    return int(classes[counts.argmax()])


def greedy_string(path: np.ndarray, blank: int) -> tuple[int, ...]:
    """The classes of ``path`` with runs of one class merged and ``blank`` dropped."""
    path = np.asarray(path, dtype=np.int64).ravel()
    runs = path[np.concatenate([[True], path[1:] != path[:-1]])] if path.size else path
    return tuple(int(c) for c in runs[runs != blank])


def harmless_alternatives(path: np.ndarray, blank: int) -> np.ndarray:
    """Per position of ``path``, the classes (up to 3, −1 padded, shape (T, 3)) that the
    position may take alone without changing :func:`greedy_string`: the blank, or the class
    of a neighbour, where the position's run goes on beside it and no two runs of one
    letter merge. Any other class would put a letter in or take one out."""
    p = np.asarray(path, dtype=np.int64).ravel()
    none = np.full(1, -1, dtype=np.int64)
    left = np.concatenate([none, p[:-1]])[:p.size]
    right = np.concatenate([p[1:], none])[:p.size]
    is_blank = p == blank
    goes_on = ~is_blank & ((left == p) ^ (right == p))  # a letter's run, on one side only
    found = np.full((p.size, 3), -1, dtype=np.int64)
    for column, side, other in ((0, left, right), (1, right, left)):
        letter_beside = (side != -1) & (side != blank)
        # a blank joins the letter beside it unless that merges two runs of one letter;
        # a letter whose run goes on at the other side joins the run beside it
        joins = letter_beside & ((is_blank & (other != side)) | (goes_on & (other == p)))
        found[:, column] = np.where(joins, side, -1)
    found[:, 2] = np.where(goes_on, blank, -1)
    return found
