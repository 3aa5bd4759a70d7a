"""Training recipes: named, documented hyper-parameter sets (:class:`Recipe`) and their registry.

Each recipe states where its numbers come from (``source``). Every field can be overridden per run through
:class:`repro.engine.train.TrainConfig`; the resolved values are recorded in ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine", "constant")


class RecipeError(ValueError):
    """An unknown recipe name or an inconsistent recipe."""


@dataclass(frozen=True)
class Recipe:
    """A complete classification training recipe.

    Learning rate: ``schedule='step'`` divides the LR by ``lr_reduce`` at the start of every epoch listed in
    :meth:`milestones` (``int(f * epochs)`` for ``f`` in ``lr_milestones``; epochs counted from 1, as in the SAP code);
    ``'cosine'`` anneals from ``lr`` to 0 over ``cosine_epochs`` (default ``epochs``), per iteration when
    ``per_iteration`` else per epoch, after ``warmup_epochs`` of linear warm-up; ``'constant'`` keeps ``lr``.

    ``batch_size`` is the global batch (split evenly across DDP processes); ``eval_batch_size`` defaults to it.
    ``augment`` names the image pipeline of :mod:`repro.data.transforms` (crops, flips, normalisation, eval resize).
    """

    name: str
    description: str
    source: str
    dataset: str
    epochs: int
    batch_size: int
    image_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "step"
    lr_milestones: tuple[float, ...] = ()
    lr_reduce: float = 1.0
    cosine_epochs: int | None = None
    per_iteration: bool = False
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    max_steps_per_epoch: int | None = None
    eval_batch_size: int | None = None
    augment: str = "sap-stl10"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise RecipeError(f"recipe {self.name!r}: optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise RecipeError(f"recipe {self.name!r}: schedule {self.schedule!r} is not one of {SCHEDULES}")
        for field in ("epochs", "batch_size", "image_size"):
            if getattr(self, field) < 1:
                raise RecipeError(f"recipe {self.name!r}: {field} must be >= 1, got {getattr(self, field)}")
        if self.lr <= 0:
            raise RecipeError(f"recipe {self.name!r}: lr must be > 0, got {self.lr}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise RecipeError(f"recipe {self.name!r}: max_steps_per_epoch must be >= 1 or None")
        if any(not 0.0 < f < 1.0 for f in self.lr_milestones):
            raise RecipeError(f"recipe {self.name!r}: lr_milestones must be fractions in (0, 1): {self.lr_milestones}")

    def milestones(self) -> tuple[int, ...]:
        """Epochs (1-based) at whose start the step schedule divides the LR: ``int(f * epochs)``."""
        return tuple(int(f * self.epochs) for f in self.lr_milestones)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (``None`` values are ignored), validated again."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the registry under ``recipe.name``."""
    if recipe.name in _RECIPES:
        raise RecipeError(f"recipe {recipe.name!r} is registered twice")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str | Recipe) -> Recipe:
    """The registered recipe called ``name`` (a :class:`Recipe` is returned unchanged)."""
    if isinstance(name, Recipe):
        return name
    try:
        return _RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe {name!r}; choose one of {list_recipes()}") from None


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def recipe_from_dict(values: dict) -> Recipe:
    """Inverse of :meth:`Recipe.to_dict` (as stored in checkpoints and ``metrics.json``)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return Recipe(**values)


# -- the SAP repo (C-Fun/Self-Attentive-Pooling-for-Efficient-Deep-Learning, base/ann.py + README command) --

SAP_STL10 = register_recipe(
    Recipe(
        name="sap-stl10",
        description="SAP classification on STL10 at 128 px: SGD 0.01, momentum 0.9, no weight decay, LR / 5 at"
        " 60/80/90 % of 300 epochs, batch 8. The logged runs trained 299 epochs"
        " (TrainConfig.epochs_compat_299, quirk B22).",
        source="SAP README / base/experiments.sh command and base/ann.py (reference_spec §4.1)",
        dataset="stl10",
        epochs=300,
        batch_size=8,
        image_size=128,
        lr=1e-2,
        momentum=0.9,
        weight_decay=0.0,
        schedule="step",
        lr_milestones=(0.6, 0.8, 0.9),
        lr_reduce=5.0,
        augment="sap-stl10",
    )
)

SAP_IMAGENET = register_recipe(
    SAP_STL10.replace(
        name="sap-imagenet",
        description="The ImageNet code path of the SAP ann.py (224 px, ImageNet mean/std, Resize+CenterCrop(224) for"
        " testing, quirk B18) with the README command's optimiser flags. The paper's own ImageNet settings were not"
        " found: this recipe is an assumption [U]; override batch_size/epochs/lr for a practical run.",
        source="SAP base/ann.py IMAGENET branch + README optimiser flags (reference_spec §4.1) [U]",
        dataset="imagenet",
        image_size=224,
        augment="sap-imagenet",
    )
)

# -- RNNPool (Saha et al., NeurIPS 2020, App. G; microsoft/EdgeML examples) --

RNNPOOL_IMAGENET = register_recipe(
    Recipe(
        name="rnnpool-imagenet",
        description="RNNPool ImageNet-1K: SGD 0.05, momentum 0.9, weight decay 4e-5, cosine (per iteration) over 150"
        " epochs, batch 256, RandomResizedCrop(224, scale 0.08-1) + flip; test Resize(256) + CenterCrop(224).",
        source="RNNPool paper App. G p.23 (paper_numbers.md §2.7); per-iteration cosine as in EdgeML"
        " examples/pytorch/vision/Visual_Wakeword/train_visualwakewords.py",
        dataset="imagenet",
        epochs=150,
        batch_size=256,
        image_size=224,
        lr=0.05,
        momentum=0.9,
        weight_decay=4e-5,
        schedule="cosine",
        per_iteration=True,
        augment="rnnpool-imagenet",
    )
)

RNNPOOL_IMAGENET10 = register_recipe(
    RNNPOOL_IMAGENET.replace(
        name="rnnpool-imagenet10",
        description="RNNPool ImageNet-10 (Table 1): as rnnpool-imagenet but 300 epochs.",
        source="RNNPool paper App. G p.23: 300 epochs for ImageNet-10 (paper_numbers.md §2.7)",
        dataset="imagenet10",
        epochs=300,
    )
)

RNNPOOL_VWW = register_recipe(
    RNNPOOL_IMAGENET.replace(
        name="rnnpool-vww",
        description="RNNPool Visual Wake Words: SGD 0.05, momentum 0.9, weight decay 4e-5, per-iteration cosine over"
        " 150 epochs, batch 256, RandomResizedCrop(224, scale 0.2-1) + flip.",
        source="RNNPool paper App. G p.23 (paper_numbers.md §2.7); EdgeML Visual_Wakeword/train_visualwakewords.py",
        dataset="vww",
        epochs=150,
        augment="rnnpool-vww",
    )
)

RNNPOOL_VWW_README = register_recipe(
    RNNPOOL_VWW.replace(
        name="rnnpool-vww-readme",
        description="The EdgeML VWW README command (--lr 0.05 --epochs 900): the script's cosine period stays 150"
        " epochs, so the LR rises and falls again every 300 epochs.",
        source="EdgeML examples/pytorch/vision/Visual_Wakeword README + train_visualwakewords.py"
        " (max_iter = 150 epochs)",
        epochs=900,
        cosine_epochs=150,
    )
)

# -- a tiny recipe for CPU checks --

SMOKE = register_recipe(
    Recipe(
        name="smoke",
        description="240 CPU steps (6 epochs x 40 batches of 32) on the generated 'shapes' set at 32 px: checks that a"
        " model learns. Adam (AMSGrad, as the SAP code's Adam) 1e-3 with a per-iteration cosine. Not comparable with"
        " any paper number.",
        source="this suite (no paper source)",
        dataset="shapes",
        epochs=6,
        batch_size=32,
        image_size=32,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        schedule="cosine",
        per_iteration=True,
        max_steps_per_epoch=40,
        augment="smoke",
    )
)
