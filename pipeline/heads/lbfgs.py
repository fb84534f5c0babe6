"""Full-batch L-BFGS (optax.lbfgs, zoom line search) for one linear head: the multinomial logistic regression
through XLA, the route of large problems (logistic.py picks it by size).

Only ever one head: vmapping L-BFGS over a sweep was measured at 877 s and 12 GB (see engine.py).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from pipeline.heads.engine import MIN_FEATURES, MIN_ROWS, _compiled, metrics, pad_rows, padded_size
from pipeline.heads.model import init_params, l2_penalty, weighted_loss


@functools.lru_cache(maxsize=None)
def _step_program(memory_size: int) -> tuple[Any, Any]:
    """(objective builder, jitted step) of L-BFGS on the L2-penalised weighted cross-entropy."""
    opt = optax.lbfgs(memory_size=memory_size)

    def objective(params, X, y, w, l2):
        return weighted_loss(params, X, y, w, "relu") + l2 * l2_penalty(params)

    def step(params, opt_state, X, y, w, l2):
        fun = functools.partial(objective, X=X, y=y, w=w, l2=l2)
        value, grad = optax.value_and_grad_from_state(fun)(params, state=opt_state)
        updates, opt_state = opt.update(grad, opt_state, params, value=value, grad=grad, value_fn=fun)
        params = optax.apply_updates(params, updates)
        return params, opt_state, value, otu.tree_max(jax.tree.map(jnp.abs, grad))  # scikit-learn's stop

    return opt, jax.jit(step)  # no donation: the L-BFGS state aliases buffers (params, zeros)


_evaluate = jax.jit(functools.partial(metrics, activation="relu"))  # one function: compiled once per shape


def fit_lbfgs(X: np.ndarray, y: np.ndarray, *, n_classes: int, l2: float, class_weight: np.ndarray | None = None,
              max_iter: int = 1000, tol: float = 1e-4, memory_size: int = 10, X_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], float]:
    """`logistic.fit_logistic` through XLA (same arguments and result; `memory_size`: L-BFGS corrections):
    one compiled step per padded shape, its compile seconds returned."""
    opt, step = _step_program(memory_size)
    (n, d), rows, cols = X.shape, padded_size(X.shape[0], MIN_ROWS), padded_size(X.shape[1], MIN_FEATURES)
    # zero-weight rows and zero columns (whose weights get no gradient and stay 0) let sizes share a program
    Xd = jnp.asarray(np.pad(np.asarray(X, np.float32), ((0, rows - n), (0, cols - d))))
    yd = jnp.asarray(pad_rows(np.asarray(y, np.int32), rows))
    per_class = np.ones(n_classes, np.float32) if class_weight is None else np.asarray(class_weight, np.float32)
    w = jnp.asarray(pad_rows(per_class[np.asarray(y)], rows))
    params = init_params(jax.random.key(0), cols, n_classes, (), "relu")  # zeros: seed-free
    state = opt.init(params)
    l2 = jnp.float32(l2)
    history: dict[str, list[float]] = {"train_loss": []}
    exe, compile_s = _compiled(step, (params, state, Xd, yd, w, l2))
    if X_val is not None:
        Xv = jnp.asarray(np.pad(np.asarray(X_val, np.float32), ((0, 0), (0, cols - d))))
        yv = jnp.asarray(y_val, jnp.int32)
        eval_exe, seconds = _compiled(_evaluate, (params, Xv, yv))
        compile_s += seconds
    for _ in range(max_iter):
        params, state, value, grad_max = exe(params, state, Xd, yd, w, l2)
        history["train_loss"].append(float(value))
        if X_val is not None:
            loss, acc = eval_exe(params, Xv, yv)
            history.setdefault("val_loss", []).append(float(loss))
            history.setdefault("val_accuracy", []).append(float(acc))
        if float(grad_max) <= tol:
            break
    params = [{"w": np.asarray(params[0]["w"])[:d], "b": np.asarray(params[0]["b"])}]
    return params, {k: np.asarray(v) for k, v in history.items()}, compile_s
