"""What a trained body's representations say, as pure numpy: iGPT's linear probe, linear CKA
between two models' layers, and the least-squares start of a linear stitching map; plus the
files the probe and comparison runs write (no jax here, so the report can read them).

  linear_probe(train, validation, test)  multinomial logistic regression on average-pooled
                                          features, regularisation chosen on validation,
                                          accuracy on test (Chen et al. 2020)
  linear_cka(x, y)                        similarity of two representations of the same inputs,
                                          invariant to rotation and isotropic scaling
                                          (Kornblith et al. 2019)
  fit_linear_map(x, y)                    the affine map from model A's layer to model B's that
                                          linear stitching starts from (Bansal et al. 2021)

Layers are numbered as the residual stream is read: 0 is the embeddings (tokens plus
positions), k is the output of block k, num_layers + 1 the output of the final norm.
igpt/representation_runs.py extracts the features from a run's checkpoints and writes:
  RUN/probe.jsonl       one record per (data, checkpoint step, layer): test and validation
                        accuracy, the chosen C, the chance level
  RUN/similarity.jsonl  one record per comparison of RUN (model A) with another run (model B):
                        a CKA matrix or a stitching-penalty matrix, layers of A by layers of B
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from igpt.paths import as_path, write_bytes_atomic

PROBE_FILE, SIMILARITY_FILE = "probe.jsonl", "similarity.jsonl"
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # inverse L2 strengths tried; validation picks one


def layer_names(num_layers: int) -> list[str]:
    """Names of the residual-stream readouts a probe sees: embeddings, each block, final norm."""
    return ["embeddings", *(f"block {k}" for k in range(1, num_layers + 1)), "final norm"]


def one_blas_thread():
    """A context with numpy's and scikit-learn's BLAS on one thread: the matrices here are small,
    and BLAS threads contending with XLA's (or another process's) made them 50x slower on a
    2-core host."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1)


# ----------------------------------------------------------------------------- linear probe

@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """One layer's probe: C chosen on validation, accuracies, and what guessing would score."""
    c: float
    validation_accuracy: float
    test_accuracy: float
    chance: float  # test accuracy of always answering the commonest train class
    classes: int


Split = tuple[np.ndarray, np.ndarray]  # (features [n, d], integer labels [n])


def _whitener(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Centred and whitened as the train features' covariance says, its null directions (a
    feature that is a sum of others, e.g. a histogram's last bin) dropped. A layer's features
    are strongly correlated: unwhitened, L-BFGS ran out of 1,000 iterations at weak
    regularisation; whitened, it converges in tens, and one C grid suits every layer."""
    mean = x.mean(axis=0)
    with one_blas_thread():
        values, vectors = np.linalg.eigh(np.cov(x - mean, rowvar=False).reshape(x.shape[1], x.shape[1]))
    keep = values > 1e-8 * max(float(values.max()), 0.0)
    if not keep.any():
        raise ValueError("linear_probe: the train features are constant; there is nothing to probe")
    project = vectors[:, keep] / np.sqrt(values[keep])
    return lambda z: (z - mean) @ project


def _check_split(name: str, split: Split, width: int | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(split[0], np.float64), np.asarray(split[1])
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"linear_probe: {name} needs features [n, d] and labels [n] with n > 0, got "
                         f"{x.shape} and {y.shape}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"linear_probe: {name} features have {x.shape[1]} dims, train has {width}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"linear_probe: {name} features hold NaN or inf; the run's weights diverged")
    return x, y


def linear_probe(train: Split, validation: Split, test: Split, cs: Sequence[float] = DEFAULT_CS,
                 max_iter: int = 1000) -> ProbeResult:
    """Multinomial logistic regression on whitened features for each C in `cs` (fitted on
    train), the C with the best validation accuracy (the strongest regularisation among ties),
    and that fit's test accuracy."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = _check_split("train", train, None)
    x_val, y_val = _check_split("validation", validation, x_train.shape[1])
    x_test, y_test = _check_split("test", test, x_train.shape[1])
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"linear_probe: the train labels hold one class ({classes}); a probe needs two or more")
    whiten = _whitener(x_train)
    x_train, x_val, x_test = whiten(x_train), whiten(x_val), whiten(x_test)
    best = None
    model = LogisticRegression(max_iter=max_iter, warm_start=True)  # each C starts from the last C's solution
    for c in sorted(cs):
        with warnings.catch_warnings(), one_blas_thread():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a capped fit is still a fit; validation judges it
            model.set_params(C=c).fit(x_train, y_train)
        accuracy = float(np.mean(model.predict(x_val) == y_val))
        if best is None or accuracy > best[1]:
            best = (c, accuracy, float(np.mean(model.predict(x_test) == y_test)))
    c, val_accuracy, test_accuracy = best
    chance = float(np.mean(y_test == classes[np.argmax(counts)]))
    return ProbeResult(float(c), val_accuracy, test_accuracy, chance, int(len(classes)))


# ----------------------------------------------------------------------------- CKA

def _centred(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"linear_cka: {name} must be features [n >= 2, d], got shape {x.shape}")
    return x - x.mean(axis=0)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations [n, d_x], [n, d_y] of the same n inputs:
    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred features. 1 for the same
    representation up to a rotation and an isotropic scale; near 0 for unrelated ones (it is
    biased upwards by about d / n, so compare matrices measured on the same n)."""
    x, y = _centred(x, "x"), _centred(y, "y")
    if len(x) != len(y):
        raise ValueError(f"linear_cka: x and y must describe the same inputs, got {len(x)} and {len(y)} rows")
    # In the smaller of feature or example space: X^T X is [d, d], X X^T is [n, n]; same norms.
    gram = (lambda a: a.T @ a) if x.shape[1] + y.shape[1] <= 2 * len(x) else (lambda a: a @ a.T)
    with one_blas_thread():
        norm_x, norm_y, cross = np.linalg.norm(gram(x)), np.linalg.norm(gram(y)), np.linalg.norm(y.T @ x)
    if norm_x == 0 or norm_y == 0:
        raise ValueError("linear_cka: a representation is constant over the inputs; CKA is undefined")
    return float(cross ** 2 / (norm_x * norm_y))


def cka_matrix(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """CKA of every layer of model A (rows) with every layer of model B (columns)."""
    return np.array([[linear_cka(x, y) for y in b] for x in a])


# ----------------------------------------------------------------------------- stitching

def fit_linear_map(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w [d_x, d_y], b [d_y]) minimising ||x w + b - y||^2 over rows: the map from model A's
    residual stream to model B's that stitching starts from (the identity when x is y)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_linear_map: need x [n, d_x] and y [n, d_y] over the same rows, got {x.shape}, {y.shape}")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    x, y = x - mean_x, y - mean_y
    # Normal equations: [d, d] systems however many rows (an SVD of [n, d] took seconds);
    # the pseudo-inverse keeps a rank-deficient x (a dead feature) solvable.
    with one_blas_thread():
        w = np.linalg.pinv(x.T @ x, hermitian=True) @ (x.T @ y)
    return w, mean_y - mean_x @ w


# ----------------------------------------------------------------------------- the files

def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, [] when it is absent."""
    path = as_path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def replace_records(path: str | os.PathLike, new: Iterable[dict[str, Any]],
                    same: Callable[[dict[str, Any]], Any]) -> None:
    """Rewrites the .jsonl file whole (objects on gs:// cannot be appended to) with the records
    whose key `same(record)` none of `new` has, then `new`: a rerun replaces its own records."""
    new = list(new)
    keys = {json.dumps(same(r), sort_keys=True) for r in new}
    kept = [r for r in read_records(path) if json.dumps(same(r), sort_keys=True) not in keys]
    lines = [json.dumps(r, sort_keys=True, allow_nan=False) for r in kept + new]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
