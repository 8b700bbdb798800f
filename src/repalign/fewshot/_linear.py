"""The linear few-shot head: batched multinomial logistic regression (private).

Solves scikit-learn's L2-penalized objective ``C * sum_i CE_i + ||W||^2 / 2`` (intercepts
unpenalized) for a batch of tasks at once, with a batched L-BFGS (history 10, backtracking
line search) stopped at scikit-learn's ``lbfgs`` criterion: every entry of the gradient of
the per-example-averaged objective at most ``tol``.

**Few shots, many features: solve in the span of the data.** With N training examples in
d > N dimensions, the optimal weights lie in the row space of the task's features X (the
gradient of the data term is ``X^T R``, and at the optimum ``W = -X^T R / lambda``), and so
does every L-BFGS iterate started from zero (each is a combination of gradients). With an
orthonormal basis Q (d, N) of that space (a QR of X^T), ``W = Q V`` turns the problem into
the same objective in N dimensions: ``X W = (X Q) V`` and ``||W|| = ||V||``. L-BFGS uses only
inner products, which Q preserves, so the iterates are the d-dimensional ones, written in
other coordinates, at N/d of the cost per step. Only the stopping rule is not invariant
(the largest gradient entry depends on the coordinates), so it is checked in the original
coordinates, whenever cheap bounds cannot decide it (:func:`_converged_in_original_space`).

Imports torch at module level: import this module lazily.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from repalign.fewshot.settings import HeadSettings

log = logging.getLogger(__name__)

# Solve in the span of the data when it has at most this fraction of the feature dimensions
# (the QR and the stopping checks cost more than they save close to 1).
_ROW_SPACE_MAX_FRACTION = 0.5


def fit_logistic_lbfgs(x, y, n_classes: int, settings: HeadSettings = HeadSettings()):
    """Batched multinomial logistic regression, L2-penalized like scikit-learn's.

    Minimizes, per task, ``mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C N)`` (scikit-learn's
    objective divided by N) with L-BFGS.

    Args:
        x: (B, N, d) standardized training features; y: (B, N) int64 class indices.

    Returns:
        weight (B, d, K) and bias (B, K).
    """
    n_tasks, n_rows, dim = x.shape
    if n_rows > _ROW_SPACE_MAX_FRACTION * dim:
        weight, bias, _ = _solve(x, y, n_classes, settings, basis=None)
        return weight, bias
    # X^T = Q R, so the coordinates of X's rows in the basis Q are X Q = R^T.
    basis, upper = torch.linalg.qr(x.transpose(1, 2))  # (B, d, N), (B, N, N)
    coordinates = upper.transpose(1, 2).contiguous()
    weight, bias, short = _solve(coordinates, y, n_classes, settings, basis=basis, warn=False)
    weight = torch.bmm(basis, weight)
    if short.any():
        # Rarely, float32 round-off in the basis coordinates stops a task just above tol;
        # it finishes in the original coordinates, from where it stopped.
        which = torch.as_tensor(np.flatnonzero(short), device=x.device)
        log.debug("linear head: %d task(s) finish in the original coordinates", len(which))
        weight[which], bias[which], _ = _solve(
            x[which],
            y[which],
            n_classes,
            settings,
            basis=None,
            start=(weight[which], bias[which]),
        )
    return weight, bias


def _solve(x, y, n_classes, settings, *, basis, start=None, warn=True):
    """L-BFGS on features x (B, N, r); ``basis`` (B, d, r) maps weights back (None: r = d).

    Starts from zero, or from ``start`` = (weight (B, r, K), bias (B, K)). Returns the weight,
    the bias and a (B,) bool numpy array of the tasks that stopped above tol."""
    n_tasks, n_rows, dim = x.shape
    k = n_classes
    lam = 1.0 / (settings.C * n_rows)
    n_weight = dim * k
    one_hot = torch.nn.functional.one_hot(y, k).to(x.dtype)

    def objective(params, x, one_hot, *_):
        weight = params[:, :n_weight].view(-1, dim, k)
        bias = params[:, n_weight:]
        logits = torch.baddbmm(bias[:, None, :], x, weight)
        log_norm = torch.logsumexp(logits, dim=-1)  # (B, N)
        picked = (logits * one_hot).sum(-1)
        loss = (log_norm - picked).mean(dim=1) + 0.5 * lam * weight.square().sum(dim=(1, 2))
        residual = (torch.exp(logits - log_norm[..., None]) - one_hot) / n_rows
        grad_w = torch.bmm(x.transpose(1, 2), residual) + lam * weight
        grad = torch.cat([grad_w.reshape(len(params), -1), residual.sum(dim=1)], dim=1)
        return loss, grad

    def converged(grad, data):
        if basis is None:
            return grad.abs().amax(dim=1) <= settings.tol
        return _converged_in_original_space(grad, data[2], k, settings.tol)

    data = (x, one_hot) if basis is None else (x, one_hot, basis)
    if start is None:
        params = torch.zeros(n_tasks, n_weight + k, dtype=x.dtype, device=x.device)
    else:
        params = torch.cat([start[0].reshape(n_tasks, -1), start[1]], dim=1)
    solution = params.clone()
    solved, short = _batched_lbfgs(objective, params, data, settings, out=solution, converged=converged, warn=warn)
    log.debug("linear head: L-BFGS iterations per task %s", solved)
    weight = solution[:, :n_weight].view(n_tasks, dim, k)
    return weight, solution[:, n_weight:], short


def _converged_in_original_space(grad, basis, n_classes: int, tol: float):
    """scikit-learn's rule, ``max |gradient entry| <= tol``, for a gradient in basis coordinates.

    The weight gradient in the original coordinates is ``Q G`` (G: (r, K) block of ``grad``).
    Each column of ``Q G`` has the norm of G's column (Q is orthonormal), and a d-vector's
    largest entry lies between its norm / sqrt(d) and its norm. So a task whose columns of G
    all have norm <= tol has converged, one with a column above tol * sqrt(d) has not, and
    only the tasks in between pay for the product ``Q G``.
    """
    n_tasks, dim, rank = basis.shape
    weight_grad = grad[:, : rank * n_classes].view(n_tasks, rank, n_classes)
    bias_ok = grad[:, rank * n_classes :].abs().amax(dim=1) <= tol
    column_norm = weight_grad.square().sum(dim=1).sqrt().amax(dim=1)  # (B,)
    done = bias_ok & (column_norm <= tol)
    undecided = bias_ok & ~done & (column_norm <= tol * math.sqrt(dim))
    if bool(undecided.any()):
        which = undecided.nonzero().squeeze(1)
        full = torch.bmm(basis.index_select(0, which), weight_grad.index_select(0, which))
        done[which] = full.abs().amax(dim=(1, 2)) <= tol
    return done


def _batched_lbfgs(
    objective, params, data, settings: HeadSettings, *, out, converged, warn=True
) -> tuple[list[int], np.ndarray]:
    """Minimize B independent smooth convex objectives with one batched L-BFGS.

    ``objective(params (B, P), *data) -> (loss (B,), grad (B, P))``; ``data`` tensors have the
    task as their first dimension; ``converged(grad, data) -> (B,) bool``. Converged tasks
    leave the batch (their rows are written to ``out``), so the remaining ones stop paying for
    them. Returns iterations per task, and which tasks stopped above tol (with a warning
    unless ``warn`` is false).
    """
    active = np.arange(len(params))
    iterations = [0] * len(params)
    loss, grad = objective(params, *data)
    s_hist: list = []
    y_hist: list = []
    rho_hist: list = []
    gamma = torch.ones(len(params), dtype=params.dtype, device=params.device)
    # A task whose line search finds no decrease restarts once on its gradient (its memory
    # wiped); if that stalls too, float precision allows no further progress and it retires.
    restarted = torch.zeros(len(params), dtype=torch.bool, device=params.device)
    retire = torch.zeros_like(restarted)
    gave_up: list[float] = []  # largest gradient entry of tasks retired above tol
    short = np.zeros(len(params), dtype=bool)
    for iteration in range(settings.max_iter):
        finished = converged(grad, data)
        stuck = retire & ~finished
        if bool(stuck.any()):
            gave_up += grad[stuck].abs().amax(dim=1).tolist()
            short[active[stuck.cpu().numpy()]] = True
        done = (finished | retire).cpu().numpy()
        if done.any():
            out[torch.as_tensor(active[done], device=out.device)] = params[torch.as_tensor(done, device=params.device)]
            keep = torch.as_tensor(~done, device=params.device)
            active = active[~done]
            if not len(active):
                if warn:
                    _warn_stalled(gave_up, settings.tol)
                return iterations, short
            params, loss, grad, gamma, restarted = (
                params[keep],
                loss[keep],
                grad[keep],
                gamma[keep],
                restarted[keep],
            )
            data = tuple(t[keep] for t in data)
            s_hist = [s[keep] for s in s_hist]
            y_hist = [y[keep] for y in y_hist]
            rho_hist = [r[keep] for r in rho_hist]
        for i in active:
            iterations[i] += 1
        direction = -_two_loop(grad, s_hist, y_hist, rho_hist, gamma)
        slope = (grad * direction).sum(dim=1)
        uphill = slope >= 0  # lost curvature information (rounding): restart on the gradient
        if uphill.any():
            direction[uphill] = -grad[uphill]
            slope = (grad * direction).sum(dim=1)
        if iteration == 0:  # as scipy: the first step has unit length
            step = 1.0 / direction.norm(dim=1).clamp_min(1e-30)
        else:
            step = torch.ones_like(slope)
        accepted = torch.zeros_like(slope, dtype=torch.bool)
        for _ in range(40):
            trial = params + step[:, None] * direction
            new_loss, new_grad = objective(trial, *data)
            new_slope = (new_grad * direction).sum(dim=1)
            armijo = new_loss <= loss + 1e-4 * step * slope
            # Approximate Wolfe (Hager & Zhang): near the optimum float32 losses cannot resolve
            # the decrease, but the directional derivative still can.
            approx_wolfe = (new_loss <= loss + 1e-6 * loss.abs()) & (new_slope <= -0.8 * slope)
            accepted = armijo | approx_wolfe
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, 0.5 * step)
        # Stalled: no step decreased the loss, or the accepted one is too short to change
        # any float (a tiny scale gamma from the last curvature pair can cause that).
        stalled = ~accepted | (trial == params).all(dim=1)
        retire = stalled & restarted
        restarted = stalled & ~restarted
        if bool(stalled.any()):  # stay, then restart on the gradient or retire
            log.debug("L-BFGS line search stalled for %d task(s)", int(stalled.sum()))
            step = step.masked_fill(stalled, 0.0)
            trial = params + step[:, None] * direction
            new_loss, new_grad = objective(trial, *data)
            for rho in rho_hist:  # a zero rho drops a pair: the next direction is -gamma g
                rho.masked_fill_(restarted, 0.0)
            gamma = gamma.masked_fill(restarted, 1.0)
        s = trial - params
        y = new_grad - grad
        sy = (s * y).sum(dim=1)
        yy = (y * y).sum(dim=1)
        valid = sy > 1e-10 * yy.sqrt() * s.norm(dim=1)
        rho = torch.where(valid, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(valid, sy / yy.clamp_min(1e-30), gamma)
        s_hist.append(s)
        y_hist.append(y)
        rho_hist.append(rho)
        if len(s_hist) > settings.lbfgs_history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        params, loss, grad = trial, new_loss, new_grad
    if warn:
        _warn_stalled(gave_up, settings.tol)
        log.warning(
            "linear head: L-BFGS stopped after %d iterations with max |gradient| %.2e > tol %.0e for %d task(s)",
            settings.max_iter,
            float(grad.abs().amax()),
            settings.tol,
            len(active),
        )
    out[torch.as_tensor(active, device=out.device)] = params
    short[active] = True
    return iterations, short


def _warn_stalled(gave_up: list[float], tol: float) -> None:
    if gave_up:
        log.warning(
            "linear head: L-BFGS stopped where float precision allows no further decrease, "
            "max |gradient| up to %.2e > tol %.0e (solver coordinates) for %d task(s)",
            max(gave_up),
            tol,
            len(gave_up),
        )


def _two_loop(grad, s_hist, y_hist, rho_hist, gamma):
    """L-BFGS two-loop recursion, batched: returns H @ grad for each task. (B, P)."""
    q = grad.clone()
    alphas = []
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
        alpha = rho * (s * q).sum(dim=1)
        q -= alpha[:, None] * y
        alphas.append(alpha)
    r = gamma[:, None] * q
    for s, y, rho, alpha in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
        beta = rho * (y * r).sum(dim=1)
        r += s * (alpha - beta)[:, None]
    return r
