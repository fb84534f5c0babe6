"""Full-batch L-BFGS (optax.lbfgs, zoom line search) for one linear head: the multinomial logistic regression.

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

from pipeline.heads.engine import _compiled, metrics
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
        return params, opt_state, value, otu.tree_norm(grad)

    return opt, jax.jit(step)  # no donation: the L-BFGS state aliases buffers (params, zeros)


def fit_lbfgs(X: np.ndarray, y: np.ndarray, *, n_classes: int, l2: float, class_weight: np.ndarray | None = None,
              max_iter: int = 200, tol: float = 1e-5, memory_size: int = 10, X_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], float]:
    """Minimises mean weighted cross-entropy + l2/2 * ||W||^2 (bias unpenalised) from zero.

    With l2 = 1 / (C * N) this is scikit-learn's LogisticRegression(C=C) objective divided by C * N.

    Args:
        X: (N, D) standardised float32 features. y: (N,) int labels in [0, n_classes).
        l2: penalty strength. class_weight: (K,) per-class loss weights or None.
        max_iter: iteration limit. tol: stop once the gradient norm falls below it.
        X_val, y_val: optional validation data, evaluated after every iteration.
    Returns:
        (params [{'w': (D, K), 'b': (K,)}], history {'train_loss': (T,), 'val_loss', 'val_accuracy': (T,)},
        compile seconds).
    """
    opt, step = _step_program(memory_size)
    Xd, yd = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.int32)
    w = jnp.asarray(np.ones(n_classes) if class_weight is None else class_weight, jnp.float32)[yd]
    params = init_params(jax.random.key(0), X.shape[1], n_classes, (), "relu")  # zeros: seed-free
    state = opt.init(params)
    l2 = jnp.float32(l2)
    history: dict[str, list[float]] = {"train_loss": []}
    exe, compile_s = _compiled(step, (params, state, Xd, yd, w, l2))
    if X_val is not None:
        Xv, yv = jnp.asarray(X_val, jnp.float32), jnp.asarray(y_val, jnp.int32)
        evaluate = jax.jit(functools.partial(metrics, activation="relu"))
        eval_exe, seconds = _compiled(evaluate, (params, Xv, yv))
        compile_s += seconds
    for _ in range(max_iter):
        params, state, value, grad_norm = exe(params, state, Xd, yd, w, l2)
        history["train_loss"].append(float(value))
        if X_val is not None:
            loss, acc = eval_exe(params, Xv, yv)
            history.setdefault("val_loss", []).append(float(loss))
            history.setdefault("val_accuracy", []).append(float(acc))
        if float(grad_norm) < tol:
            break
    return jax.tree.map(np.asarray, params), {k: np.asarray(v) for k, v in history.items()}, compile_s
