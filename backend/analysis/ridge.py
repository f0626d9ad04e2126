"""Encoding models: ridge regression from stimulus features to every unit, alpha chosen per unit.

    fit = fit_ridge_cv(X, Y)           # X [n_stimuli, n_features], Y [n_stimuli, n_units]
    Y_hat = fit.predict(X_test)        # [n_test, n_units]

One eigendecomposition of the centred design serves every alpha: with ``Xc = U diag(s) V'``
the ridge solution for alpha is ``V diag(s / (s^2 + alpha)) U' y``, so after the one product
``Z = U' Y`` every alpha costs only small ``k x n_units`` work (GCV), or one ``n x k x n_units``
product (exact leave-one-out, k-fold). Three ways to score alphas, one function each:

- ``"gcv"`` (default): generalised cross-validation (Golub, Heath & Wahba 1979), the rotation-
  invariant approximation of leave-one-out; costs one pass over Y in all.
- ``"loo"``: exact efficient leave-one-out, the criterion of scikit-learn's ``RidgeCV(cv=None,
  alpha_per_target=True)`` (mean squared LOO error per target, first alpha wins ties), so alphas,
  coefficients and predictions agree with it.
- ``"kfold"``: held-out squared error pooled over user folds (or k contiguous blocks), then a
  refit on all stimuli with each unit's best alpha.

Units are processed in chunks sized from a memory budget: Y may be a numpy memmap with 327,684
columns and is never copied whole (to the device or in memory). Computation runs in torch on
CPU or GPU; the decomposition itself is always float64.

Precision in float32 (the default compute dtype). Means are float64 and are subtracted before
anything is rounded to float32 (so offsets such as X + 1e4, Y + 1e6 cost no digits of the spread);
the intercept and the means stay float64 and ``predict`` centres its input on the training mean
before the float32 product. Residuals are never formed as a difference of two large sums of
squares where that loses the digits: when the centred design has full rank n - 1 (wide designs:
decoding from more voxels than stimuli) every centred response lies in the span of X and its
out-of-span part is exactly 0; otherwise a unit whose out-of-span part is under 1% of its sum of
squares has that part recomputed directly as ``||Yc - U U'Yc||^2``. Residuals and leverages of
each alpha are built from ``alpha / (s^2 + alpha)``, which stays accurate for alphas down to
1e-12, where ``1 - s^2 / (s^2 + alpha)`` would be 0.

When there are more features than stimuli (decoding from many voxels) the decomposition is of
the stimulus Gram matrix, built in feature chunks, and coefficients are formed from the dual
(``Xc' C``) so nothing of size ``n_features x n_stimuli`` is ever held.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

DEFAULT_ALPHAS = np.logspace(-2, 5, 15)
METHODS = ("gcv", "loo", "kfold")
# Eigenvalues of X'X (= s^2) below this fraction of the largest are treated as zero: their
# directions are numerically noise (float64 eigh is accurate to ~1e-16 of the largest) and, for
# any alpha in a sensible grid, get shrunk to nothing anyway.
_EIG_RTOL = 1e-10
_CPU_BUDGET = 1 << 30  # bytes of working memory per chunk of units on the CPU
_FEATURE_CHUNK = 8192  # features per pass when forming a Gram matrix / dual coefficients
_SMALL_EIGH = 2048  # eigendecompositions up to this size run single-threaded (see _eigh)
# A unit's out-of-span sum of squares computed as ||Yc||^2 - ||U'Yc||^2 is accurate to ~1e-7 of
# ||Yc||^2 in float32: below this fraction of ||Yc||^2 it is recomputed directly (see _out_of_span).
_DIRECT_RESIDUAL = 1e-2
_ROW_BLOCK_BYTES = 64 << 20  # float64 temporaries while centring float64 responses / predicting


@contextlib.contextmanager
def _single_thread(active: bool) -> Iterator[None]:
    """Run torch CPU work on one thread for the duration (process-wide, restored after)."""
    if not active:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _eigh(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues and eigenvectors of a symmetric float64 matrix.

    LAPACK's eigh of a small matrix is a chain of tiny BLAS calls; with two threads on a busy
    machine each call waits for the other thread: 2.1 s against 0.02 s single-threaded for
    384 x 384 here. Small ones therefore run on one thread.
    """
    with _single_thread(A.device.type == "cpu" and A.shape[0] <= _SMALL_EIGH):
        return torch.linalg.eigh(A)


@dataclass
class RidgeFit:
    """A fitted ridge encoding model (one linear map per unit).

    coef:      [n_features, n_units]   weights (float32 unless fitted in float64)
    intercept: [n_units] float64       added after ``X @ coef`` (``y_mean - x_mean @ coef``)
    alpha:     [n_units] float64       each unit's chosen regularisation (a value of ``alphas``)
    cv_score:  [n_units] float64       cross-validated R^2 at that alpha: 1 - cv_mse / variance
                                       of the unit over the training stimuli about its mean (the
                                       convention of scikit-learn's ``r2_score``, with or without
                                       an intercept; GCV: its approximation; 0 for a constant unit)
    alphas:    [n_alphas] float64      the grid searched
    method:    "gcv" | "loo" | "kfold"
    cv_mse:    [n_units] float64       the criterion at the chosen alpha: mean squared CV error
                                       ("loo": equals -best_score_ of scikit-learn's RidgeCV with
                                       alpha_per_target=True; "gcv": the GCV estimate of it)
    x_mean:    [n_features] float64    training mean of X (zeros without intercept); ``predict``
    y_mean:    [n_units] float64       works around these, so offsets cancel in float64
    """

    coef: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray
    cv_score: np.ndarray
    alphas: np.ndarray
    method: str
    info: dict = field(default_factory=dict)
    cv_mse: np.ndarray | None = None
    x_mean: np.ndarray | None = None
    y_mean: np.ndarray | None = None

    def predict(self, X: Any) -> np.ndarray:
        """[n, n_units] predicted responses for features ``X`` [n, n_features].

        float64 when X or the fit is float64, else float32 (as scikit-learn keeps float32). X is
        centred on the training mean in float64 before the product in the fit's dtype, so a large
        offset of X or Y does not cost the float32 product its digits.
        """
        X = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X)
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        if X.ndim != 2 or X.shape[1] != self.coef.shape[0]:
            raise ValueError(f"X must be [n, {self.coef.shape[0]}], got {X.shape}")
        if self.x_mean is None:  # built by hand without the means
            return X.astype(self.coef.dtype) @ self.coef + self.intercept
        out = np.empty((X.shape[0], self.coef.shape[1]), np.result_type(X.dtype, self.coef.dtype))
        step = max(1, _ROW_BLOCK_BYTES // (8 * max(1, X.shape[1])))
        for i in range(0, X.shape[0], step):
            Xc = (X[i:i + step] - self.x_mean).astype(self.coef.dtype)
            out[i:i + step] = Xc @ self.coef + self.y_mean
        return out


# ----------------------------------------------------------------------------------------------
# Decomposition: one per training set (the whole data, and each fold's training part).


@dataclass
class _Basis:
    """Thin SVD of the centred training design ``Xc = U diag(s) V'`` (rank k).

    s:     [k] float64 (CPU)          singular values, all > 0
    Ut:    [k, n_train] compute dtype on the device
    V:     [d, k] compute dtype on the device, or None in dual form (wide X; coefficients are then
           ``Xc' U diag(1/(s^2+alpha)) U'y``, formed by `_dual_coef`)
    n_out: dimension of the response space outside the span of U and the intercept's constant
           (n_train - k - 1 with an intercept). 0 (a centred design of full rank n - 1, as when
           there are more features than stimuli): every centred response lies in the span and its
           out-of-span part is exactly 0, which the solvers use instead of computing rounding.
    lev:   [n_alphas, n_train] float64 (CPU) 1 - diag(hat matrix) per alpha (LOO only), the hat
           matrix including the intercept's 1/n
    """

    s: torch.Tensor
    Ut: torch.Tensor
    V: torch.Tensor | None
    n_out: int
    lev: torch.Tensor | None = None


def _kept(evals: torch.Tensor) -> torch.Tensor:
    """Mask of the eigenvalues of X'X (or XX') that are numerically non-zero (see _EIG_RTOL)."""
    keep = evals > _EIG_RTOL * evals[-1].clamp(min=0)
    if evals[-1] <= 0:
        keep[:] = False
    return keep


def _n_out(n: int, k: int, fit_intercept: bool) -> int:
    return max(0, n - k - (1 if fit_intercept else 0))


def _basis_from_tall(Xc: torch.Tensor, dtype, device, *, need_v: bool, fit_intercept: bool
                     ) -> tuple[_Basis, torch.Tensor, torch.Tensor]:
    """Basis of a centred float64 design with n > d, from the eigendecomposition of Xc'Xc.

    Xc'Xc is d x d: forming it and its eigh take ~0.1 s at 9,000 x 384 against 2.6 s for an SVD
    of the tall matrix (2 cores), and in float64 squaring the condition number costs nothing that
    matters for ridge (components below _EIG_RTOL are dropped).
    Returns (basis, U [n, k] float64, V [d, k] float64).
    """
    evals, V = _eigh(Xc.T @ Xc)
    keep = _kept(evals)
    s = evals[keep].sqrt()
    V = V[:, keep]
    U = (Xc @ V) / s
    basis = _Basis(s=s, Ut=U.T.to(device=device, dtype=dtype).contiguous(),
                   V=V.to(device=device, dtype=dtype) if need_v else None,
                   n_out=_n_out(Xc.shape[0], len(s), fit_intercept))
    return basis, U, V


def _basis_from_gram(K: torch.Tensor, dtype, device, *, fit_intercept: bool) -> tuple[_Basis, torch.Tensor]:
    """Dual-form basis from a centred float64 Gram matrix K = Xc Xc' [n, n] (wide X)."""
    evals, U = _eigh(K)
    keep = _kept(evals)
    s = evals[keep].sqrt()
    U = U[:, keep]
    return _Basis(s=s, Ut=U.T.to(device=device, dtype=dtype).contiguous(), V=None,
                  n_out=_n_out(K.shape[0], len(s), fit_intercept)), U


def _centred_gram(M: torch.Tensor, rows: np.ndarray, cols: np.ndarray, fit_intercept: bool) -> torch.Tensor:
    """(X[rows] - m)(X[cols] - m)' from the Gram M = X X', m = mean of X[cols].

    M may be of X already shifted by any constant row vector (the global mean, see `_gram`):
    centring removes it exactly, and a shift near the mean keeps the subtractions below small.
    """
    r, c = torch.as_tensor(rows), torch.as_tensor(cols)
    K = M[r][:, c]
    if not fit_intercept:
        return K
    # x_i' m = mean_j∈cols M_ij ; m'm = mean over cols x cols of M
    row_dot = M[r][:, c].mean(dim=1)
    col_dot = M[c][:, c].mean(dim=1)
    mm = M[c][:, c].mean()
    return K - row_dot[:, None] - col_dot[None, :] + mm


def _one_minus_leverage(U: torch.Tensor, s: torch.Tensor, alphas: torch.Tensor, fit_intercept: bool,
                        n_out: int) -> torch.Tensor:
    """[n_alphas, n] float64: 1 - diag(H) for each alpha, H the ridge hat matrix.

    H = 11'/n + U diag(s^2/(s^2+alpha)) U' (the intercept is not penalised). Written as
    (1 - 1/n - sum_j U_ij^2) + sum_j U_ij^2 alpha/(s_j^2+alpha) so small alphas (h near 1, as
    when there are more features than stimuli) do not lose digits to cancellation; the first term
    (the out-of-span part of the diagonal) is exactly 0 when n_out is, not rounding of ~1e-16 that
    would swamp the second at alphas of 1e-12.
    """
    s2 = s**2
    U2 = U**2
    if n_out == 0:
        outside = torch.zeros(U.shape[0], dtype=U.dtype)
    else:
        outside = (1.0 - U2.sum(1) - (1.0 / U.shape[0] if fit_intercept else 0.0)).clamp(min=0)  # [n]
    g = alphas[:, None] / (s2[None, :] + alphas[:, None])  # [A, k]
    return outside[None, :] + g @ U2.T


# ----------------------------------------------------------------------------------------------
# Solvers: one algorithm each, on a chunk of centred responses Yc [n, c] (compute dtype, device).
# Each returns the per-alpha cross-validation mean squared error [n_alphas, c] (float64) and,
# where it has it, Z = U'Yc [k, c] for the refit.


def _out_of_span(basis: _Basis, Yc: torch.Tensor, Z: torch.Tensor, z2: torch.Tensor, total: torch.Tensor,
                 scratch: torch.Tensor) -> torch.Tensor:
    """[c] float64: ||(I - UU')Yc||^2 per unit, the residual sum of squares no alpha can reduce.

    0 when n_out is 0 (exactly: Yc lies in the span). Otherwise ||Yc||^2 - ||Z||^2, except for
    units where that is under _DIRECT_RESIDUAL of ||Yc||^2 (units almost inside the span of X): the
    difference of the two big sums keeps only ~1e-7 of ||Yc||^2 in float32, so for those the
    residual is formed and summed directly (one n x k product for those columns, in scratch).
    """
    if basis.n_out == 0:
        return torch.zeros_like(total)
    perp = total - z2.sum(0)
    low = perp < _DIRECT_RESIDUAL * total
    if bool(low.any()):
        cols = torch.nonzero(low).squeeze(1).to(Yc.device)
        n, c = Yc.shape[0], len(cols)
        R = scratch.reshape(-1)[: n * c].view(n, c)
        torch.index_select(Yc, 1, cols, out=R)
        R.addmm_(basis.Ut.T, Z[:, cols], alpha=-1.0)
        perp[low] = R.square_().sum(0).to(perp.dtype)
    return perp.clamp(min=0)


def _solve_gcv_svd(basis: _Basis, Yc: torch.Tensor, alphas: torch.Tensor, total: torch.Tensor,
                   fit_intercept: bool, scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised cross-validation: GCV(alpha) = (RSS/n) / (1 - df/n)^2 per unit.

    RSS(alpha) = ||Yc - U diag(f) Z||^2 = ||(I - UU')Yc||^2 + sum_j (alpha/(s_j^2+alpha))^2 z_j^2
    and df = tr(H) = [1 if intercept] + sum_j s_j^2/(s_j^2+alpha), so 1 - df/n =
    (n_out + sum_j alpha/(s_j^2+alpha)) / n, written so that tiny alphas (df near n when X is wide)
    keep their digits. Only Z = U'Yc touches Y (plus `_out_of_span` for units nearly in the span).
    total: [c] float64, ||Yc||^2 per unit. scratch: [n, c] free for `_out_of_span`.
    """
    n = Yc.shape[0]
    Z = basis.Ut @ Yc
    z2 = Z.to(torch.float64).square()
    perp = _out_of_span(basis, Yc, Z, z2, total.to(z2.device), scratch)
    s2 = basis.s.to(z2.device) ** 2
    a = alphas.to(z2.device)
    g = a[:, None] / (s2[None, :] + a[:, None])  # [A, k] fraction of each component left in the residual
    rss = perp[None, :] + g.square() @ z2  # [A, c]
    denom = ((basis.n_out + g.sum(1)) / n).clamp(min=1e-300) ** 2
    return (rss / n / denom[:, None]).cpu(), Z


def _solve_loo_svd(basis: _Basis, Yc: torch.Tensor, alphas: torch.Tensor,
                   buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact leave-one-out: e_i = r_i / (1 - h_ii), r = (I - H) y, scored by mean e^2 per unit.

    This is scikit-learn's ``_RidgeGCV`` criterion (svd/eigen modes) with ``scoring=None``:
    ``mean(looe**2, axis=0)`` per target. One ``n x k x c`` product per alpha. Yc is overwritten
    (with the part of Y outside the span of X, unless that is 0); buf is scratch of the same shape.
    """
    n = Yc.shape[0]
    Z = basis.Ut @ Yc
    s2 = basis.s**2
    U = basis.Ut.T
    inside = basis.n_out == 0
    # r = (I - UU')y + U diag(alpha/(s^2+alpha)) Z: the first term once (exactly 0 when every
    # centred response lies in the span), then each alpha adds a shrunk in-span part; unlike
    # y - U diag(f) Z this does not cancel when alpha is small.
    if not inside:
        Yc.addmm_(U, Z, alpha=-1.0)
    mse = torch.empty(len(alphas), Yc.shape[1], dtype=torch.float64)
    for i, alpha in enumerate(alphas.tolist()):
        g = alpha / (s2 + alpha)
        lev = basis.lev[i]
        if inside:
            # r and 1 - h are then both sums of g-weighted terms: divide both by max(g), so that at
            # alphas of 1e-12 (g ~ 1e-15) r^2 does not underflow float32.
            top = g.max()
            g, lev = g / top, lev / top
            torch.mm(U, g.to(device=Yc.device, dtype=Yc.dtype)[:, None] * Z, out=buf)
        else:
            torch.addmm(Yc, U, g.to(device=Yc.device, dtype=Yc.dtype)[:, None] * Z, out=buf)
        # mean_i (r_i / (1 - h_i))^2 as one matrix-vector product over r^2
        w = (1.0 / (lev**2 * n)).to(device=Yc.device, dtype=Yc.dtype)
        mse[i] = (buf.square_().T @ w).cpu().double()
    return mse, Z


def _solve_kfold_svd(folds: list[tuple[torch.Tensor, torch.Tensor, _Basis, torch.Tensor]], Y: torch.Tensor,
                     alphas: torch.Tensor, fit_intercept: bool) -> torch.Tensor:
    """Held-out squared error pooled over folds: sum over folds of ||y_test - y_hat||^2 / n_test.

    Y is the *uncentred* chunk [n, c] as stored (any device/dtype; rows are gathered, centred and
    converted to the compute dtype and moved per fold); each fold centres with its own training
    means, as a ridge fitted on the training part alone would. Per fold and alpha: one
    ``n_test x k x c`` product, with A = (X_test - mean_train) V precomputed:
    y_hat = A diag(s/(s^2+alpha)) U'y_c.
    """
    sse = torch.zeros(len(alphas), Y.shape[1], dtype=torch.float64)
    n_test = 0
    for train, test, basis, A in folds:
        Ytr = _rows_centred(Y, train, A.dtype, A.device, fit_intercept)
        mean = Ytr.mean if fit_intercept else None
        Ytr = Ytr.values
        Yte = _rows_centred(Y, test, A.dtype, A.device, fit_intercept, mean=mean).values
        Z = basis.Ut @ Ytr
        del Ytr
        s = basis.s
        err = torch.empty_like(Yte)
        for i, alpha in enumerate(alphas.tolist()):
            g = (s / (s**2 + alpha)).to(device=A.device, dtype=A.dtype)
            torch.addmm(Yte, A, g[:, None] * Z, alpha=-1.0, out=err)
            sse[i] += err.square_().sum(0).cpu().double()
        n_test += len(test)
    return sse / n_test


# ----------------------------------------------------------------------------------------------
# Helpers: inputs, chunks, folds.


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = {"float32": torch.float32, "float64": torch.float64}.get(str(np.dtype(dtype)), None)
    if out not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return out


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _numpy_2d(a: Any, name: str) -> np.ndarray:
    """A 2-D numpy view (no copy for numpy/memmap input; torch tensors are brought to CPU)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return a


def _source_view(Y: np.ndarray | torch.Tensor, start: int, stop: int, rows: np.ndarray | None) -> torch.Tensor:
    """Y[rows, start:stop] as a torch tensor, without copying where possible (a strided view of
    a numpy array or memmap when rows is None; only these columns' pages are read; with rows,
    a copy of this chunk's rows). Never written to."""
    if isinstance(Y, torch.Tensor):
        block_t = Y[:, start:stop]
        return block_t if rows is None else block_t[torch.as_tensor(rows, device=Y.device)]
    block = np.asarray(Y[:, start:stop] if rows is None else Y[:, start:stop][rows])
    if block.dtype.kind != "f" or not block.dtype.isnative:
        block = block.astype(np.float32)  # integers, big-endian files: a converted copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmap: the view is only read
        return torch.from_numpy(block)


class _Workspace:
    """Two [n, chunk] buffers reused for every chunk: the centred responses and scratch.

    Reusing matters on the CPU: a fresh 0.5 GB tensor per chunk pays its page faults each time
    (square-and-sum of 9,000 x 13,000: 0.43 s into a new tensor, 0.12 s into a reused one).
    """

    def __init__(self, n: int, chunk: int, dtype: torch.dtype, device: torch.device):
        self.n = n
        self._a = torch.empty(n * chunk, dtype=dtype, device=device)
        self._b = torch.empty(n * chunk, dtype=dtype, device=device)

    def views(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two contiguous [n, c] views (c <= chunk)."""
        return self._a[: self.n * c].view(self.n, c), self._b[: self.n * c].view(self.n, c)


def _subtract_mean(src: torch.Tensor, out: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """out <- src - mean (column means of src unless given), rounded to out's dtype only after the
    subtraction; returns the mean, float64 [c] on out's device. out may be src itself.

    float64 data into float32: subtracted in float64, a block of rows at a time. Otherwise in
    out's dtype, in two steps, because a float32 mean of Y + 1e6 is off by ~0.1 (its sum is ~1e10):
    first a shift close to the data (the first row; a given mean rounded to out's dtype), which
    leaves numbers of the size of the spread, then their own mean (or the given mean's rounding
    remainder). The result is centred to float32 accuracy of the spread, not of the offset, for
    one pass over the data more than a plain ``src - src.mean(0)``.
    """
    if src.dtype.itemsize > out.dtype.itemsize:
        if mean is None:
            mean = src.mean(0)
        m = mean.to(device=src.device, dtype=src.dtype)
        step = max(1, _ROW_BLOCK_BYTES // (src.element_size() * max(1, src.shape[1])))
        for i in range(0, src.shape[0], step):
            out[i:i + step].copy_(src[i:i + step] - m)
        return mean.to(device=out.device, dtype=torch.float64)
    given = mean is not None
    if given:
        mean = mean.to(device=out.device, dtype=torch.float64)
        shift = mean.to(out.dtype)
    else:
        shift = src[0].to(device=out.device, dtype=out.dtype).clone()  # clone: out may be src
    if src.device == out.device and src.dtype == out.dtype:
        torch.sub(src, shift, out=out)
    else:
        out.copy_(src)  # exact: the same or a wider dtype
        out.sub_(shift)
    if given and out.dtype == torch.float64:
        return mean  # the shift was the mean itself
    rest = (mean - shift.double()).to(out.dtype) if given else out.mean(0)
    out.sub_(rest)
    return mean if given else shift.double() + rest.double()


@dataclass
class _Centred:
    values: torch.Tensor  # [rows, c] compute dtype on the device
    mean: torch.Tensor | None  # [c] float64 (None without intercept)


def _rows_centred(Y: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype, device: torch.device,
                  fit_intercept: bool, mean: torch.Tensor | None = None) -> _Centred:
    """Y[rows] centred (on its own means, or on ``mean``) in the compute dtype on the device."""
    block = Y[rows.to(Y.device)]  # a copy in Y's dtype
    if block.dtype == dtype and block.device == device:
        out = block
    else:
        out = torch.empty(block.shape, dtype=dtype, device=device)
    if not fit_intercept:
        if out is not block:
            out.copy_(block)
        return _Centred(out, None)
    return _Centred(out, _subtract_mean(block, out, mean))


def _centre_into(src: torch.Tensor, Yc: torch.Tensor, scratch: torch.Tensor,
                 fit_intercept: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write src minus its column means (src itself without intercept) into Yc.

    Returns float64 [c] each: the means (zeros without intercept), ||Yc||^2 per column and the
    variance of each column about its mean (what cv_score is relative to, with or without
    intercept). The means are those of `_subtract_mean` (accurate whatever the offset).
    """
    n, c = Yc.shape
    if fit_intercept:
        mean = _subtract_mean(src, Yc, None)
    else:
        Yc.copy_(src)
        mean = torch.zeros(c, dtype=torch.float64, device=Yc.device)
    total = torch.square(Yc, out=scratch).sum(0).double()
    if fit_intercept:
        var = total / n
    else:  # variance about the mean, in scratch (one more pass; models without intercept only)
        _subtract_mean(Yc, scratch, None)
        var = scratch.square_().sum(0).double() / n
    return mean, total, var


def _parse_folds(folds, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs from: None (5 blocks), an int k (k contiguous blocks), labels
    [n] (one fold per distinct label), a scikit-learn splitter, or a sequence of pairs."""
    if folds is None:
        folds = 5
    if isinstance(folds, (int, np.integer)):
        k = int(folds)
        if not 2 <= k <= n:
            raise ValueError(f"need 2 <= folds <= n_stimuli, got {k}")
        # Contiguous blocks, not shuffled: neighbouring stimuli (same session/run) stay together.
        blocks = np.array_split(np.arange(n), k)
        pairs = [(np.setdiff1d(np.arange(n), b), b) for b in blocks]
    elif hasattr(folds, "split"):
        pairs = [(np.asarray(tr), np.asarray(te)) for tr, te in folds.split(np.zeros((n, 1)))]
    elif len(folds) == n and all(np.isscalar(g) for g in folds):
        labels = np.asarray(folds)
        pairs = [(np.flatnonzero(labels != g), np.flatnonzero(labels == g)) for g in np.unique(labels)]
    else:
        pairs = [(tr, te) for tr, te in folds]
    out = []
    for tr, te in pairs:
        tr, te = np.asarray(tr, np.int64), np.asarray(te, np.int64)
        if len(tr) < 2 or len(te) < 1:
            raise ValueError("every fold needs at least 2 training and 1 test stimulus")
        out.append((tr, te))
    return out


def _x_mean(X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(X.shape[1], np.float64)
    for j in range(0, X.shape[1], _FEATURE_CHUNK):
        block = X[:, j:j + _FEATURE_CHUNK] if rows is None else X[rows, j:j + _FEATURE_CHUNK]
        out[j:j + _FEATURE_CHUNK] = np.asarray(block, np.float64).mean(0)
    return out


def _gram(X: np.ndarray, shift: np.ndarray, device: torch.device) -> torch.Tensor:
    """(X - shift)(X - shift)' [n, n] float64, accumulated over feature chunks (X never whole in
    float64). shift is the global mean (zeros without intercept): with X + 1e4 an uncentred Gram
    would hold ~1e8 d per entry and centring it afterwards would keep ~1e-8 of the spread."""
    n = X.shape[0]
    M = torch.zeros(n, n, dtype=torch.float64, device=device)
    for j in range(0, X.shape[1], _FEATURE_CHUNK):
        block = np.subtract(X[:, j:j + _FEATURE_CHUNK], shift[j:j + _FEATURE_CHUNK], dtype=np.float64)
        block = torch.from_numpy(block).to(device)
        M += block @ block.T
    return M.cpu()


def _dual_coef(X: np.ndarray, x_mean: np.ndarray, C: torch.Tensor) -> torch.Tensor:
    """Xc' C [d, c] for the wide case, one feature chunk of X at a time (C is [n, c]).

    Each chunk is centred in X's own dtype before it is rounded to C's dtype (float64 X + 1e4
    rounded first would lose ~1e-3 per entry); what the mean loses to X's dtype, x_mean - m, is
    put back as -(x_mean - m)(1'C), a correction of ~1e-7 |x_mean| times a sum that is ~0.
    """
    d = X.shape[1]
    out = torch.empty(d, C.shape[1], dtype=C.dtype, device=C.device)
    col_sum = C.sum(0)
    np_dtype = torch.empty(0, dtype=C.dtype).numpy().dtype
    for j in range(0, d, _FEATURE_CHUNK):
        block = np.asarray(X[:, j:j + _FEATURE_CHUNK])
        if block.dtype.kind != "f":
            block = block.astype(np.float64)
        mean = x_mean[j:j + _FEATURE_CHUNK]
        m = mean.astype(block.dtype)
        rest = torch.from_numpy(mean - m.astype(np.float64)).to(device=C.device, dtype=C.dtype)
        block = torch.from_numpy((block - m).astype(np_dtype, copy=False)).to(C.device)
        out[j:j + _FEATURE_CHUNK] = block.T @ C - rest[:, None] * col_sum[None, :]
    return out


def _offset_dot(x_mean: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """x_mean' B [c] in float64 (x_mean float64 [d], B [d, c] any dtype), in feature chunks so no
    float64 copy of B is made."""
    out = torch.zeros(B.shape[1], dtype=torch.float64, device=B.device)
    for j in range(0, B.shape[0], _FEATURE_CHUNK):
        out += x_mean[j:j + _FEATURE_CHUNK] @ B[j:j + _FEATURE_CHUNK].double()
    return out


def _chunk_units(n: int, d: int, k: int, n_alphas: int, n_units: int, method: str, wide: bool,
                 rows: bool, itemsize: int, budget: int) -> int:
    """Units per chunk so that the chunk's working arrays fit in ``budget`` bytes."""
    # [n, c] arrays alive at once: the workspace's two, plus kfold's training/test copies, plus
    # the dual coefficients' n x c when X is wide, plus the gathered rows when Y is subset.
    copies = {"gcv": 2, "loo": 2, "kfold": 4}[method] + (1 if wide else 0) + (1 if rows else 0)
    per_unit = itemsize * (copies * n + 2 * d + 2 * k) + 8 * (4 * n_alphas + k)
    return int(max(1, min(n_units, budget // per_unit)))


# ----------------------------------------------------------------------------------------------


def fit_ridge_cv(
    X: Any,
    Y: Any,
    alphas: Sequence[float] | np.ndarray = DEFAULT_ALPHAS,
    *,
    method: str = "gcv",
    folds: Any = None,
    y_rows: Any = None,
    fit_intercept: bool = True,
    chunk_units: int | None = None,
    memory_budget: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    progress: Callable[[int, int], None] | None = None,
) -> RidgeFit:
    """Ridge from features to every unit with each unit's alpha chosen by cross-validation.

    X: [n_stimuli, n_features] features (e.g. caption embeddings); numpy, memmap or torch.
    Y: [n_stimuli, n_units] responses; numpy (a memmap is read one chunk of columns at a time),
       or torch. Never modified, never copied whole.
    alphas: [n_alphas] positive regularisation strengths (penalty alpha * ||w||^2 on the sum of
       squared errors, as in scikit-learn). Ties go to the first in this order.
    method: "gcv" (default, fastest), "loo" (exact leave-one-out, = scikit-learn RidgeCV with
       cv=None and alpha_per_target=True), or "kfold" (held-out squared error over ``folds``).
    folds: for "kfold": an int k (k contiguous blocks; default 5), fold labels [n_stimuli], a
       scikit-learn splitter, or a sequence of (train_indices, test_indices).
    y_rows: optional int [n_stimuli]: the rows of Y that match X's rows (e.g. the training split
       of a memmapped dataset with all stimuli). Gathered one chunk of units at a time, so
       ``Y[y_rows]`` (9,000 x 327,684 float32 = 11.8 GB) is never materialised.
    fit_intercept: centre X and Y (unpenalised intercept), as scikit-learn does.
    chunk_units: units per chunk; default from ``memory_budget`` (bytes of working memory per
       chunk: 1 GiB on the CPU, half the free memory on a GPU).
    device: torch device ("cpu", "cuda", ...); default CUDA when available.
    dtype: compute dtype for the products with Y (float32 default; float64 for exact agreement).
       The decomposition of X is float64 whatever this is.
    progress: called as progress(units_done, n_units) after each chunk.

    Returns a :class:`RidgeFit` (coef [n_features, n_units], intercept, alpha, cv_score, cv_mse).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "kfold" and folds is not None:
        raise ValueError("folds are only used by method='kfold'")
    dtype = _resolve_dtype(dtype)
    device = _resolve_device(device)
    X = _numpy_2d(X, "X")
    Y_src = Y if isinstance(Y, torch.Tensor) else _numpy_2d(Y, "Y")
    if isinstance(Y_src, torch.Tensor) and Y_src.ndim == 1:
        Y_src = Y_src[:, None]
    n, d = X.shape
    n_units = Y_src.shape[1]
    if y_rows is not None:
        y_rows = np.asarray(y_rows)
        if y_rows.dtype == bool:
            y_rows = np.flatnonzero(y_rows)
        y_rows = y_rows.astype(np.int64)
        if y_rows.ndim != 1 or (len(y_rows) and (y_rows.min() < 0 or y_rows.max() >= Y_src.shape[0])):
            raise ValueError("y_rows must be 1-D indices into Y's rows")
    n_y = Y_src.shape[0] if y_rows is None else len(y_rows)
    if n_y != n:
        raise ValueError(f"X has {n} stimuli but Y has {n_y}")
    if n < 3:
        raise ValueError("need at least 3 stimuli")
    alphas_np = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas_np.ndim != 1 or len(alphas_np) == 0 or not np.all(np.isfinite(alphas_np)) or np.any(alphas_np <= 0):
        raise ValueError("alphas must be a non-empty 1-D array of positive finite numbers")
    alphas_t = torch.from_numpy(alphas_np)
    wide = d >= n

    # --- decompositions (float64), once for all units
    x_mean = _x_mean(X) if fit_intercept else np.zeros(d)
    M = _gram(X, x_mean, device) if wide else None
    if wide:
        everyone = np.arange(n)
        basis, U64 = _basis_from_gram(_centred_gram(M, everyone, everyone, fit_intercept), dtype, device,
                                      fit_intercept=fit_intercept)
    else:
        Xc64 = torch.from_numpy(np.asarray(X, np.float64) - x_mean)
        basis, U64, _ = _basis_from_tall(Xc64, dtype, device, need_v=True, fit_intercept=fit_intercept)
        del Xc64
    if method == "loo":
        basis.lev = _one_minus_leverage(U64, basis.s, alphas_t, fit_intercept, basis.n_out)
    del U64
    fold_bases = []
    if method == "kfold":
        for tr, te in _parse_folds(folds, n):
            if wide:
                b, U_tr = _basis_from_gram(_centred_gram(M, tr, tr, fit_intercept), dtype, device,
                                           fit_intercept=fit_intercept)
                # A = (X_te - m_tr) V = K(te, tr) U diag(1/s), from the same Gram
                A = _centred_gram(M, te, tr, fit_intercept) @ U_tr / b.s
            else:
                m_tr = np.asarray(X[tr], np.float64).mean(0) if fit_intercept else np.zeros(d)
                Xtr = torch.from_numpy(np.asarray(X[tr], np.float64) - m_tr)
                b, _, V_tr = _basis_from_tall(Xtr, dtype, device, need_v=False, fit_intercept=fit_intercept)
                A = torch.from_numpy(np.asarray(X[te], np.float64) - m_tr) @ V_tr
            fold_bases.append((torch.from_numpy(tr), torch.from_numpy(te), b,
                               A.to(device=device, dtype=dtype).contiguous()))
    k = len(basis.s)

    # --- outputs
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    coef = np.empty((d, n_units), np_dtype)
    intercept = np.empty(n_units, np.float64)
    y_means = np.empty(n_units, np.float64)
    best_alpha = np.empty(n_units, np.float64)
    cv_score = np.empty(n_units, np.float64)
    cv_mse = np.empty(n_units, np.float64)

    if chunk_units is None:
        if memory_budget is None:
            if device.type == "cuda":
                free, _total = torch.cuda.mem_get_info(device)
                memory_budget = free // 2
            else:
                memory_budget = _CPU_BUDGET
        chunk_units = _chunk_units(n, d, k, len(alphas_np), n_units, method, wide, y_rows is not None,
                                   torch.empty(0, dtype=dtype).element_size(), int(memory_budget))
    chunk_units = max(1, min(int(chunk_units), n_units))

    s = basis.s
    s2 = s**2
    # Per-alpha factor that maps Z = U'y to coefficients: V diag(s/(s^2+a)) Z in primal form,
    # Xc' U diag(1/(s^2+a)) Z in dual (wide) form.
    fac = (s[None, :] if not wide else torch.ones_like(s)[None, :]) / (s2[None, :] + alphas_t[:, None])  # [A, k]
    fac = fac.to(device=device, dtype=dtype)
    x_mean_t = torch.from_numpy(x_mean).to(device=device)  # float64

    workspace = _Workspace(n, min(chunk_units, n_units), dtype, device)
    for start in range(0, n_units, chunk_units):
        stop = min(n_units, start + chunk_units)
        src = _source_view(Y_src, start, stop, y_rows)
        Yc, scratch = workspace.views(stop - start)
        if method == "kfold":
            mse = _solve_kfold_svd(fold_bases, src, alphas_t, fit_intercept)
        y_mean, total, var = _centre_into(src, Yc, scratch, fit_intercept)
        del src
        if not torch.isfinite(total).all():
            raise ValueError(f"Y has non-finite values in units {start}..{stop - 1}")
        if method == "gcv":
            mse, Z = _solve_gcv_svd(basis, Yc, alphas_t, total, fit_intercept, scratch)
        elif method == "loo":
            mse, Z = _solve_loo_svd(basis, Yc, alphas_t, scratch)
        else:
            Z = basis.Ut @ Yc
        del Yc, scratch
        best = torch.argmin(mse, dim=0)  # first of equal minima: scikit-learn's tie rule
        W = fac[best.to(device)].T * Z  # [k, c]
        B = basis.V @ W if not wide else _dual_coef(X, x_mean, basis.Ut.T @ W)
        # float64: with offsets the intercept is a small difference of large numbers
        b0 = y_mean - _offset_dot(x_mean_t, B) if fit_intercept else y_mean
        coef[:, start:stop] = B.cpu().numpy()
        intercept[start:stop] = b0.cpu().numpy()
        y_means[start:stop] = y_mean.cpu().numpy()
        best_alpha[start:stop] = alphas_np[best.numpy()]
        var = var.cpu()
        best_mse = mse.gather(0, best[None, :])[0]
        score = torch.where(var > 0, 1.0 - best_mse / var.clamp(min=1e-300), torch.zeros_like(var))
        cv_score[start:stop] = score.numpy()
        cv_mse[start:stop] = best_mse.numpy()
        if progress is not None:
            progress(stop, n_units)

    return RidgeFit(coef=coef, intercept=intercept, alpha=best_alpha, cv_score=cv_score,
                    alphas=alphas_np, method=method,
                    info={"rank": k, "chunk_units": chunk_units, "device": str(device),
                          "dtype": str(dtype).replace("torch.", ""), "n_stimuli": n},
                    cv_mse=cv_mse, x_mean=x_mean, y_mean=y_means)

