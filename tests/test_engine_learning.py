"""The ``smoke`` recipe learns: a short CPU run on the generated ``shapes`` set ends well above chance.

Opt-in (``pytest -m learning``): a few minutes of CPU per architecture. ``shapes`` has 10 balanced classes, so chance
is 0.10; the bar is 2.5 times that on 300 test images (about 8 standard errors above chance), on the last epoch (not
the best one).
"""

from __future__ import annotations

import pytest

from repro.data import prepare
from repro.engine.train import TrainConfig, train

CHANCE = 0.10


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare("shapes", root, n_train=3000, n_test=300)
    return root


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("arch", ["resnet18-skip-1222", "resnet18-nlp-1222"])
def test_smoke_recipe_learns_on_shapes(shapes_root, tmp_path, arch):
    metrics = train(
        TrainConfig(
            arch=arch, recipe="smoke", image_size=32, data_root=str(shapes_root), out_dir=str(tmp_path), device="cpu"
        )
    )
    print(f"{arch}: test_acc_last {metrics['test_acc_last']:.3f}, best {metrics['test_acc_best']:.3f}")
    assert metrics["image_size"] == 32
    assert metrics["test_acc_last"] >= 2.5 * CHANCE
