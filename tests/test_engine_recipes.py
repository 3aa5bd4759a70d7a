"""Recipes and LR schedules: the sap-stl10 table of reference_spec §4.1, the 299-epoch compat flag, cosine recipes."""

from __future__ import annotations

import math

import pytest

from repro.engine.recipes import Recipe, RecipeError, get_recipe, list_recipes, recipe_from_dict
from repro.engine.schedule import epochs_to_run, lr_at, lr_table


def _reference_sap_stl10_lr(epoch: int) -> float:
    """reference_spec §4.1: 1-179 1e-2, 180-239 2e-3, 240-269 4e-4, 270-300 8e-5."""
    if epoch <= 179:
        return 1e-2
    if epoch <= 239:
        return 2e-3
    if epoch <= 269:
        return 4e-4
    return 8e-5


def test_sap_stl10_lr_matches_reference_table_epoch_by_epoch():
    recipe = get_recipe("sap-stl10")
    table = lr_table(recipe)
    assert [epoch for epoch, _ in table] == list(range(1, 301))
    for epoch, lr in table:
        assert lr == pytest.approx(_reference_sap_stl10_lr(epoch), rel=1e-12), epoch
    assert recipe.milestones() == (180, 240, 270)
    # the LR is constant within an epoch (no per-iteration schedule, no warm-up)
    assert lr_at(recipe, 180, step=600, steps_per_epoch=625) == lr_at(recipe, 180)


def test_sap_stl10_recipe_fields():
    recipe = get_recipe("sap-stl10")
    assert (recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay) == ("sgd", 1e-2, 0.9, 0.0)
    assert (recipe.epochs, recipe.batch_size, recipe.image_size, recipe.lr_reduce) == (300, 8, 128, 5.0)
    assert recipe.label_smoothing == 0.0 and recipe.warmup_epochs == 0


def test_epochs_compat_299_keeps_the_300_epoch_schedule():
    recipe = get_recipe("sap-stl10")
    assert epochs_to_run(recipe) == 300
    assert epochs_to_run(recipe, epochs_compat_299=True) == 299
    assert lr_table(recipe, epochs_to_run(recipe, True)) == lr_table(recipe)[:299]


def test_step_schedule_divides_repeatedly_as_the_official_code():
    recipe = get_recipe("sap-stl10")
    assert lr_at(recipe, 300) == 1e-2 / 5 / 5 / 5


def test_rnnpool_cosine_is_per_iteration():
    recipe = get_recipe("rnnpool-imagenet")
    assert (recipe.lr, recipe.weight_decay, recipe.momentum, recipe.epochs) == (0.05, 4e-5, 0.9, 150)
    steps = 100
    assert lr_at(recipe, 1, 0, steps) == pytest.approx(0.05)
    assert lr_at(recipe, 76, 0, steps) == pytest.approx(0.025)  # halfway: 75 epochs done
    # the EdgeML formula: lr * (1 + cos(pi * it / max_it)) / 2 with it = step + epoch0 * steps
    it, max_it = 3 * steps + 17, 150 * steps
    assert lr_at(recipe, 4, 17, steps) == pytest.approx(0.05 * (1 + math.cos(math.pi * it / max_it)) / 2)
    assert lr_at(recipe, 4, 17, steps) != lr_at(recipe, 4, 18, steps)


def test_vww_readme_recipe_keeps_the_150_epoch_cosine_period():
    readme = get_recipe("rnnpool-vww-readme")
    assert readme.epochs == 900 and readme.cosine_epochs == 150
    assert lr_at(readme, 151) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(readme, 301) == pytest.approx(0.05)
    vww = get_recipe("rnnpool-vww")
    assert vww.augment == "rnnpool-vww" and vww.epochs == 150


def test_warmup_is_linear():
    recipe = get_recipe("smoke").replace(warmup_epochs=2, name="w", per_iteration=True)
    assert lr_at(recipe, 1, 0, 10) == 0.0
    assert lr_at(recipe, 2, 0, 10) == pytest.approx(recipe.lr / 2)
    assert lr_at(recipe, 3, 0, 10) == pytest.approx(recipe.lr)


def test_registry_lists_the_named_recipes_with_sources():
    names = list_recipes()
    for name in ("sap-stl10", "sap-imagenet", "rnnpool-imagenet", "rnnpool-vww", "smoke"):
        assert name in names
    for name in names:
        recipe = get_recipe(name)
        assert recipe.source and recipe.description
        assert recipe_from_dict(recipe.to_dict()) == recipe


def test_unknown_recipe_names_the_choices():
    with pytest.raises(RecipeError, match="sap-stl10"):
        get_recipe("sap-stl100")


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"schedule": "poly"}, "schedule"),
        ({"epochs": 0}, "epochs"),
        ({"lr_milestones": (0.5, 1.5)}, "lr_milestones"),
        ({"colour": 1}, "unknown recipe field"),
    ],
)
def test_invalid_recipes_are_rejected(changes, match):
    with pytest.raises(RecipeError, match=match):
        get_recipe("sap-stl10").replace(**changes)


def test_epochs_count_from_one():
    with pytest.raises(ValueError, match="counted from 1"):
        lr_at(get_recipe("smoke"), 0)


def test_recipe_is_frozen():
    recipe = get_recipe("smoke")
    with pytest.raises(AttributeError):
        recipe.lr = 1.0  # type: ignore[misc]
    assert isinstance(recipe, Recipe)
