"""Training checkpoints with orbax: array state (parameters, optimizer state, RNG key, best parameters)
plus a JSON record (step, data order position, history, early-stopping counters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
    """Numbered checkpoints in `directory`, the latest `keep` of them kept.

    The array pytree is saved as its flat list of leaves and rebuilt with the caller's tree
    structure, so optax's named tuples and empty states need no special handling.
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False)
        handlers = {"arrays": ocp.StandardCheckpointHandler(), "record": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, tree: Any, record: dict) -> None:
        """Writes `tree` (arrays) and `record` (JSON values) as checkpoint `step`, atomically."""
        leaves = {f"{i:06d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}
        self._manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(leaves),
                                                         record=ocp.args.JsonSave(record)))
        self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """The arrays of checkpoint `step` (default the latest) in the structure of `like`, and its record.

        Raises:
          ValueError: no checkpoint, or one whose arrays do not match `like` (a different run's).
        """
        step = self.latest() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {self.directory}")
        leaves, treedef = jax.tree.flatten(like)
        abstract = {f"{i:06d}": jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for i, x in enumerate(leaves)}
        saved = self._manager.item_metadata(step)["arrays"]
        if saved is None or set(saved) != set(abstract) or any(
                tuple(saved[k].shape) != abstract[k].shape for k in abstract):
            raise ValueError(f"checkpoint {step} in {self.directory} does not match this model and optimizer; "
                             "use another --out directory or delete it")
        out = self._manager.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract),
                                                                  record=ocp.args.JsonRestore()))
        arrays = [out.arrays[f"{i:06d}"] for i in range(len(leaves))]
        return jax.tree.unflatten(treedef, arrays), dict(out.record)

    def close(self) -> None:
        self._manager.close()
