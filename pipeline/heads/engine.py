"""One training engine for every first-order head: H heads trained at once by a single jitted program.

Each epoch is one compiled call: a `jax.lax.scan` over minibatches whose body `jax.vmap`s an AdamW step
(optax.adamw under optax.inject_hyperparams, so each head's rate and decay sit in its optimizer state)
over the head axis, so every head sees the same minibatch while its learning rate, weight decay,
dropout and init seed are its own. A single head is H=1 of the same program. Shapes are static (the
ragged last batch is padded and masked), so a fit compiles once per (N, D, K, H, batch size, epochs,
architecture); pipeline.compile_cache makes later processes reuse the compiled programs. Sweeps are first-order only:
vmapping optax.lbfgs over heads was measured at 877 s and 12 GB, so L-BFGS serves single fits (lbfgs.py).
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pipeline.heads.checks import check_values
from pipeline.heads.model import forward, init_params, weighted_loss
from pipeline.optim import decay_mask, warmup_cosine

HPARAMS = {"lr": None, "weight_decay": 0.0, "dropout": 0.0, "seed": 0}  # per-head values and their defaults
_EXECUTABLES: OrderedDict[tuple, Any] = OrderedDict()  # least recently used first
MIN_ROWS = 256  # smaller training sets are padded to this many rows: one program for all of them
MIN_FEATURES = 64  # narrower features are padded with zero columns to this width
MAX_EXECUTABLES = 64  # enough for a grid search's shapes; older programs are dropped, not kept for the process


@dataclass
class SweepResult:
    """What train_heads returns.

    Attributes:
        params: stacked layers [{'w': (H, D_in, D_out), 'b': (H, D_out)}, ...] (numpy), in standardised space.
        history: 'train_loss' (E, H) and, with validation data, 'val_loss' and 'val_accuracy' (E, H).
        best_epoch: (H,) 1-based epoch whose parameters were kept (the last one without early stopping).
        compile_seconds: XLA compile time of this call (0 when every program was already compiled).
        train_seconds: wall time of the epochs, compile excluded.
    """

    params: list[dict[str, np.ndarray]]
    history: dict[str, np.ndarray]
    best_epoch: np.ndarray
    compile_seconds: float
    train_seconds: float

    def head(self, h: int) -> list[dict[str, np.ndarray]]:
        """The parameters of head h."""
        return [{k: v[h] for k, v in layer.items()} for layer in self.params]


def padded_size(n: int, minimum: int) -> int:
    """n rounded up so that nearby sizes share one compiled program.

    At least `minimum`; above it, a multiple of 1/8 of n's power of two (at most 12.5% padding). Padded rows
    carry zero loss weight and padded feature columns are zero, so they change no result.
    """
    if n <= minimum:
        return minimum
    step = 2 ** max(0, n.bit_length() - 4)
    return -(-n // step) * step


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """a with zero rows appended up to `rows`."""
    return a if len(a) == rows else np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)])


def _compiled(fn: Any, args: tuple) -> tuple[Any, float]:
    """An executable for fn at these argument shapes, compiled ahead of time once per process; compile seconds."""
    leaves, tree = jax.tree.flatten(args)
    key = (fn, tree, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
    if key in _EXECUTABLES:
        _EXECUTABLES.move_to_end(key)
        return _EXECUTABLES[key], 0.0
    start = time.perf_counter()
    _EXECUTABLES[key] = fn.lower(*args).compile()
    if len(_EXECUTABLES) > MAX_EXECUTABLES:
        _EXECUTABLES.popitem(last=False)
    return _EXECUTABLES[key], time.perf_counter() - start


def _optimizer(lr: Any, weight_decay: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    """AdamW (decay on kernels only) whose peak rate `lr` follows `schedule`; per-head values live in its state."""
    return optax.inject_hyperparams(optax.adamw, static_args="mask")(
        learning_rate=lambda count: lr * schedule(count),
        weight_decay=weight_decay, mask=decay_mask)


@functools.lru_cache(maxsize=None)
def _init_program(n_features: int, n_classes: int, hidden: tuple[int, ...], activation: str) -> Any:
    """Jitted (seeds, lrs, decays) -> (params, optimizer states, dropout keys) of H heads.

    Independent of the schedule (the optimizer recomputes its scheduled rate from the step count at
    every update), so fits of any length share it.
    """
    def init_one(seed, lr, wd, used_features):
        key = jax.random.key(seed)
        params = init_params(jax.random.fold_in(key, 0), n_features, n_classes, hidden, activation, used_features)
        return params, _optimizer(lr, wd, optax.constant_schedule(1.0)).init(params), jax.random.fold_in(key, 1)

    return jax.jit(jax.vmap(init_one, in_axes=(0, 0, 0, None)))


@functools.lru_cache(maxsize=None)
def _programs(n_features: int, n_classes: int, hidden: tuple[int, ...], activation: str,
              total_steps: int, warmup_fraction: float) -> tuple[Any, Any, Any]:
    """(init, epoch, evaluate) jitted for one architecture and schedule."""
    schedule = warmup_cosine(1.0, total_steps, warmup_fraction)
    loss_fn = functools.partial(weighted_loss, activation=activation)

    def step_one(params, opt_state, key, lr, dropout, x, y, w, step):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, w, dropout=dropout,
                                                  key=jax.random.fold_in(key, step) if hidden else None)
        # the weight decay given to _optimizer here is a placeholder: update reads each head's from its state
        updates, opt_state = _optimizer(lr, 0.0, schedule).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def epoch(state, X, y, weights, idx, mask, hp, step0):
        def body(carry, batch):
            params, opt_state, keys = carry
            b_idx, b_mask, t = batch
            x, yb = X[b_idx], y[b_idx]
            params, opt_state, loss = jax.vmap(step_one, in_axes=(0, 0, 0, 0, 0, None, None, None, None))(
                params, opt_state, keys, hp["lr"], hp["dropout"], x, yb, weights[yb] * b_mask, step0 + t)
            return (params, opt_state, keys), loss

        state, losses = jax.lax.scan(body, state, (idx, mask, jnp.arange(idx.shape[0])))
        return state, losses.mean(axis=0)

    def evaluate(params, X, y):
        return jax.vmap(lambda p: metrics(p, X, y, activation))(params)

    return (_init_program(n_features, n_classes, hidden, activation), jax.jit(epoch, donate_argnums=(0,)),
            jax.jit(evaluate))


def metrics(params: Any, X: jax.Array, y: jax.Array, activation: str) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy, accuracy) of one head on a labelled set."""
    logits = forward(params, X, activation)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)


def _hparams(hparams: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-head arrays for every hyperparameter, checked: known keys, equal lengths, valid values."""
    unknown = sorted(set(hparams) - set(HPARAMS))
    if unknown:
        raise ValueError(f"unknown per-head hyperparameters {unknown}; valid: {sorted(HPARAMS)}")
    if "lr" not in hparams:
        raise ValueError("hparams needs 'lr' (one learning rate per head)")
    arrays = {k: np.asarray(v) for k, v in hparams.items()}
    lengths = {len(a) for a in arrays.values() if a.ndim == 1}
    if any(a.ndim > 1 for a in arrays.values()) or len(lengths) > 1:
        shapes = {k: a.shape for k, a in arrays.items()}
        raise ValueError(f"per-head hyperparameters must be scalars or 1-D arrays of one length H; got {shapes}")
    n_heads = lengths.pop() if lengths else 1
    out = {k: np.broadcast_to(arrays.get(k, d), (n_heads,)) for k, d in HPARAMS.items()}
    for name, values in out.items():
        check_values(name, values)
    return {k: v.astype(np.uint32 if k == "seed" else np.float32) for k, v in out.items()}


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(S, B) shuffled row indices and a (S, B) mask; the last batch is padded (row 0, mask 0)."""
    steps = math.ceil(n / batch_size)
    idx = np.zeros(steps * batch_size, np.int32)
    idx[:n] = rng.permutation(n)
    mask = (np.arange(steps * batch_size) < n).astype(np.float32)
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def train_heads(X: np.ndarray, y: np.ndarray, hparams: Mapping[str, Any], *, n_classes: int,
                hidden: Sequence[int] = (), activation: str = "relu", epochs: int = 10, batch_size: int = 256,
                class_weight: np.ndarray | None = None, X_val: np.ndarray | None = None,
                y_val: np.ndarray | None = None, early_stopping: bool = False, patience: int = 5, seed: int = 0,
                warmup_fraction: float = 0.05,
                progress: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> SweepResult:
    """Trains H heads (linear, or MLPs with `hidden` layers) with minibatch AdamW and a warm-up-cosine schedule.

    Args:
        X: (N, D) float32 features, already standardised. y: (N,) int labels in [0, n_classes).
        hparams: per-head (H,) arrays: 'lr' (required), 'weight_decay', 'dropout' (hidden layers only),
            'seed' (init); scalars broadcast. Every head sees the same minibatches (shuffled by `seed`).
        n_classes: K. hidden: hidden layer widths; () is a linear head. activation: 'relu', 'gelu' or 'tanh'.
        epochs: passes over X. batch_size: rows per step (capped at N).
        class_weight: (K,) loss weight of each class, or None for equal weights.
        X_val, y_val: (M, D), (M,) validation data, evaluated after every epoch.
        early_stopping: keep each head's parameters of its lowest validation loss and stop once every head
            went `patience` epochs without improving (needs validation data).
        warmup_fraction: share of all steps spent warming the learning rate up.
        progress: called after each epoch with (epoch, {metric: (H,) array}).
    Returns:
        A SweepResult.
    """
    hp = _hparams(hparams)
    n, d = X.shape
    if early_stopping and X_val is None:
        raise ValueError("early_stopping needs validation data (X_val, y_val)")
    rows = padded_size(n, MIN_ROWS)  # X's shape; rows past n are never drawn
    cols = padded_size(d, MIN_FEATURES)  # zero columns: their first-layer weights start and stay at zero
    batch_size = min(int(batch_size), rows)
    steps = math.ceil(n / batch_size)
    init, epoch_fn, evaluate = _programs(cols, n_classes, tuple(hidden), activation, epochs * steps,
                                         float(warmup_fraction))
    Xd = jnp.asarray(np.pad(np.asarray(X, np.float32), ((0, rows - n), (0, cols - d))))
    yd = jnp.asarray(pad_rows(np.asarray(y, np.int32), rows))
    weights = jnp.asarray(np.ones(n_classes) if class_weight is None else class_weight, jnp.float32)
    hpd = {k: jnp.asarray(v) for k, v in hp.items() if k != "seed"}
    has_val = X_val is not None
    if has_val:
        Xv = jnp.asarray(np.pad(np.asarray(X_val, np.float32), ((0, 0), (0, cols - d))))
        yv = jnp.asarray(y_val, jnp.int32)

    init_args = (jnp.asarray(hp["seed"]), hpd["lr"], hpd["weight_decay"], jnp.int32(d))
    init_exe, compile_s = _compiled(init, init_args)
    state = init_exe(*init_args)
    best = jax.tree.map(jnp.copy, state[0]) if early_stopping else None  # the epoch call donates state
    best_loss = np.full(len(hp["lr"]), np.inf)
    best_epoch = np.full(len(hp["lr"]), epochs)
    waited = np.zeros(len(hp["lr"]), int)
    history: dict[str, list[np.ndarray]] = {"train_loss": []}
    train_s = 0.0
    for e in range(epochs):
        idx, mask = _epoch_batches(n, batch_size, np.random.default_rng([seed, e]))
        args = (state, Xd, yd, weights, jnp.asarray(idx), jnp.asarray(mask), hpd, jnp.int32(e * steps))
        exe, seconds = _compiled(epoch_fn, args)
        compile_s += seconds
        start = time.perf_counter()
        state, loss = exe(*args)
        record = {"train_loss": np.asarray(loss)}
        if has_val:
            eval_exe, seconds = _compiled(evaluate, (state[0], Xv, yv))
            compile_s += seconds
            record["val_loss"], record["val_accuracy"] = map(np.asarray, eval_exe(state[0], Xv, yv))
        train_s += time.perf_counter() - start
        for k, v in record.items():
            history.setdefault(k, []).append(v)
        if progress is not None:
            progress(e + 1, record)
        if early_stopping:
            improved = record["val_loss"] < best_loss
            best_loss = np.where(improved, record["val_loss"], best_loss)
            best_epoch = np.where(improved, e + 1, best_epoch)
            waited = np.where(improved, 0, waited + 1)
            keep = jnp.asarray(improved)
            best = jax.tree.map(lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                                state[0], best)
            if np.all(waited >= patience):
                break
    params = jax.tree.map(np.asarray, best if early_stopping else state[0])
    params[0]["w"] = params[0]["w"][:, :d]  # drop the padded input rows
    return SweepResult(params, {k: np.stack(v) for k, v in history.items()},
                       best_epoch, compile_s, train_s)
