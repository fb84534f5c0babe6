"""Checking flat key maps against what a model expects: missing/unexpected keys, shapes, prefixes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ml_dtypes
import numpy as np

# How many keys a message lists before "... and N more".
MAX_LISTED = 10


class KeyMismatchError(ValueError):
    """The checkpoint's keys are not the keys the model expects."""


class ShapeMismatchError(ValueError):
    """Some checkpoint arrays do not have the shapes the model expects."""


def _listing(keys: Iterable[str], limit: int = MAX_LISTED) -> str:
    """Sorted keys, comma-separated, truncated to ``limit`` with a count of the rest."""
    ordered = sorted(keys)
    shown = ", ".join(repr(k) for k in ordered[:limit])
    return shown + (f" ... and {len(ordered) - limit} more" if len(ordered) > limit else "")


def check_keys(expected: Iterable[str], got: Iterable[str], *, source: str) -> None:
    """Raises if ``got`` differs from ``expected``, naming the missing and the unexpected keys.

    Args:
        expected: the keys the model needs.
        got: the keys the checkpoint provides.
        source: where ``got`` came from (a file name), for the message.

    Raises:
        KeyMismatchError: listing up to ``MAX_LISTED`` missing and unexpected keys each, sorted.
    """
    expected_set, got_set = set(expected), set(got)
    missing, unexpected = expected_set - got_set, got_set - expected_set
    if not missing and not unexpected:
        return
    parts = [f"{source}: checkpoint keys do not match the model ({len(expected_set)} expected, "
             f"{len(got_set)} found)"]
    if missing:
        parts.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    raise KeyMismatchError("; ".join(parts))


def check_shapes(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, np.ndarray], *,
                 source: str) -> None:
    """Raises if any key present in both maps has a different shape in ``got``.

    Keys present in only one map are ignored here; :func:`check_keys` reports those.

    Args:
        expected: key -> shape the model needs.
        got: key -> array from the checkpoint.
        source: where ``got`` came from, for the message.

    Raises:
        ShapeMismatchError: listing every mismatched key with the expected and the found shape.
    """
    bad = sorted(k for k in expected.keys() & got.keys()
                 if tuple(expected[k]) != tuple(np.shape(got[k])))
    if bad:
        lines = "\n".join(f"  {k!r}: expected {tuple(expected[k])}, found {tuple(np.shape(got[k]))}"
                          for k in bad)
        raise ShapeMismatchError(f"{source}: {len(bad)} array(s) have the wrong shape:\n{lines}")


def _floating(dtype: np.dtype) -> bool:
    """numpy's and ml_dtypes' float types (bfloat16 included, which numpy alone does not count)."""
    try:
        ml_dtypes.finfo(dtype)
    except ValueError:
        return False
    return True


def check_values(expected: Mapping[str, np.dtype], got: Mapping[str, np.ndarray], *, source: str) -> None:
    """Raises unless every array in both maps has the kind of dtype the model expects and floats are finite.

    A float32 file whose header was changed to int32 has the same byte count, so only the dtype tells;
    NaN/Inf weights would turn every feature into NaN.

    Args:
        expected: key -> dtype of the model's variable.
        got: key -> array from the checkpoint.
        source: where ``got`` came from, for the message.

    Raises:
        ValueError: listing the keys of the wrong dtype kind (float vs integer) and those holding NaN/Inf.
    """
    common = sorted(expected.keys() & got.keys())
    kind = [k for k in common if _floating(np.dtype(expected[k])) != _floating(np.asarray(got[k]).dtype)]
    nonfinite = [k for k in common if k not in kind and _floating(np.asarray(got[k]).dtype)
                 and not np.isfinite(got[k]).all()]
    wrong = ", ".join(f"{k!r} is {np.asarray(got[k]).dtype}, expected {np.dtype(expected[k])}"
                      for k in kind[:MAX_LISTED])
    parts = [f"{len(kind)} array(s) of the wrong dtype kind: {wrong}"] if kind else []
    parts += [f"{len(nonfinite)} array(s) holding NaN or Inf: {_listing(nonfinite)}"] if nonfinite else []
    if parts:
        raise ValueError(f"{source}: " + "; ".join(parts))


def select_prefix(flat: Mapping[str, np.ndarray], prefix: str, *, source: str) -> dict[str, np.ndarray]:
    """Keeps the entries under a '.'-joined prefix and strips it (``'model.fc.w'`` -> ``'fc.w'``).

    Args:
        flat: key -> array, keys '.'-joined.
        prefix: e.g. ``'state_dict'``, ``'model'`` or ``'model.backbone'``; no trailing dot.
        source: where ``flat`` came from, for the message.

    Returns:
        the selected entries with the prefix and its dot removed from their keys.

    Raises:
        KeyMismatchError: no key starts with ``prefix + '.'``; lists the top-level prefixes there are.
    """
    head = prefix.rstrip(".") + "."
    selected = {k[len(head):]: v for k, v in flat.items() if k.startswith(head)}
    if not selected:
        tops = {k.split(".", 1)[0] for k in flat}
        raise KeyMismatchError(f"{source}: no keys under {prefix!r}; top-level names are: "
                               f"{_listing(tops) or '(none)'}")
    return selected
