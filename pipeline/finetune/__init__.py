"""Fine-tuning: a pre-trained backbone with a new head, optax parameter groups, augmentation in the
jitted step, orbax checkpoints with exact resume, and export back as a backbone."""

from pipeline.finetune.checkpoint import Checkpoints
from pipeline.finetune.groups import MODES, build_tx, param_labels
from pipeline.finetune.loop import FitResult, epoch_order, fit
from pipeline.finetune.run import FinetuneResult, finetune
from pipeline.finetune.settings import FinetuneSettings
from pipeline.finetune.transfer import build_target, set_linear_head

__all__ = ["Checkpoints", "FinetuneResult", "FinetuneSettings", "FitResult", "MODES", "build_target", "build_tx",
           "epoch_order", "finetune", "fit", "param_labels", "set_linear_head"]
