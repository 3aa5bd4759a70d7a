"""Training and evaluation: named recipes, the classification trainer (single process or DDP), checkpoints."""

from repro.engine.errors import (
    NonFiniteLossError,
    TrainConfigError,
    TrainingError,
    TrainingInterruptedError,
    TrainingOOMError,
)
from repro.engine.evaluate import evaluate, evaluate_checkpoint
from repro.engine.recipes import Recipe, get_recipe, list_recipes, register_recipe
from repro.engine.schedule import lr_at, lr_table

# The trainers live in ``repro.engine.train`` (``TrainConfig``, ``train``) and ``repro.engine.train_detection``
# (``DetectionTrainConfig``, ``train_detection``; docs/detection.md).

__all__ = [
    "NonFiniteLossError",
    "Recipe",
    "TrainConfigError",
    "TrainingError",
    "TrainingInterruptedError",
    "TrainingOOMError",
    "evaluate",
    "evaluate_checkpoint",
    "get_recipe",
    "list_recipes",
    "lr_at",
    "lr_table",
    "register_recipe",
]
