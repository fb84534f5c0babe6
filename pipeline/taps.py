"""The one tap resolver: tap names or integer indices -> names (plain Python, so the store and heads use it
without importing JAX; backbones re-export it)."""

from __future__ import annotations

from typing import Iterable, Sequence

Tap = str | int


def resolve_taps(names: Sequence[str], requested: Iterable[Tap]) -> list[str]:
    """Turns tap names or integer indices (negative allowed, strings of digits too) into names.

    Args:
      names: the backbone's taps in network order.
      requested: names or indices.
    Returns:
      The requested names in network order, without repeats.
    Raises:
      ValueError: for an unknown name or an out-of-range index, listing the valid taps.
    """
    out: set[str] = set()
    for tap in requested:
        if isinstance(tap, str) and tap.lstrip("-").isdigit():
            tap = int(tap)
        if isinstance(tap, bool) or not isinstance(tap, (str, int)):
            raise TypeError(f"tap {tap!r} must be a name or an integer index; valid taps: {', '.join(names)}")
        if isinstance(tap, int):
            if not -len(names) <= tap < len(names):
                raise ValueError(f"tap index {tap} is out of range for {len(names)} taps "
                                 f"(valid: {-len(names)}..{len(names) - 1}, names: {', '.join(names)})")
            out.add(names[tap])
        elif tap in names:
            out.add(tap)
        else:
            raise ValueError(f"unknown tap {tap!r}; valid taps: {', '.join(names)}")
    if not out:
        raise ValueError(f"no taps requested; valid taps: {', '.join(names)}")
    return [n for n in names if n in out]
