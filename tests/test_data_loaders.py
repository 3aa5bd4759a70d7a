"""Augmentation transforms, epoch-deterministic loaders, and the ffcv path against the torchvision path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repro.data import DatasetError, build_loader, build_transforms, epoch_order, prepare
from repro.data.transforms import AUGMENTATIONS


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare("shapes", root, n_train=40, n_test=12, image_size=32)
    return root


def _loader(root, **kw):
    args = dict(root=root, image_size=32, batch_size=8, recipe="sap-stl10", train=True, seed=5)
    return build_loader("shapes", "train", **{**args, **kw})


# ----------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("recipe", sorted(AUGMENTATIONS))
@pytest.mark.parametrize("train", [True, False])
def test_every_recipe_gives_normalised_tensors(recipe, train):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = build_transforms(recipe, 40, train)(image)
    expected = (3, 50, 70) if recipe == "sap-cifar" and not train else (3, 40, 40)  # B18: no test resize
    assert out.shape == expected and out.dtype == torch.float32 and out.min() < 0 < out.max()


def test_recipe_quirks_and_fixes():
    names = lambda t: [type(op).__name__ for op in t.transforms]  # noqa: E731
    assert names(build_transforms("sap-stl10", 96, True))[:3] == ["Resize", "RandomResizedCrop", "RandomHorizontalFlip"]
    assert names(build_transforms("sap-cifar", 32, True))[0] == "RandomCrop"  # ann.py without --im_size
    assert build_transforms("sap-imagenet", 224, False).transforms[0].size == 224  # B18: Resize(224)+CenterCrop(224)
    assert build_transforms("sap-imagenet", 224, False, faithful=False).transforms[0].size == 256
    assert build_transforms("rnnpool-vww", 224, True).transforms[0].scale == (0.2, 1.0)
    assert build_transforms("sap-cifar", 64, False, faithful=False).transforms[0].size == 64
    cifar100 = build_transforms("sap-cifar", 32, False, dataset="cifar100").transforms[-1]
    assert cifar100.mean == (0.5071, 0.4867, 0.4408)
    with pytest.raises(DatasetError, match=r"unknown recipe 'sap-mnist'; valid recipes: sap-stl10"):
        build_transforms("sap-mnist", 32, True)


# ----------------------------------------------------------------------------------------- epoch ordering


def test_epoch_order_shards_like_distributed_sampler():
    shards = [epoch_order(10, epoch=2, seed=1, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(np.concatenate(shards)) == set(range(10))  # padded with repeats, nothing lost
    again = epoch_order(10, epoch=2, seed=1, shuffle=True, rank=1, world_size=3)
    assert (again == shards[1]).all()
    assert not (epoch_order(10, epoch=3, seed=1, shuffle=True) == epoch_order(10, epoch=2, seed=1, shuffle=True)).all()
    dropped = [epoch_order(10, epoch=0, seed=1, shuffle=True, rank=r, world_size=3, drop_last=True) for r in range(3)]
    assert len(set(np.concatenate(dropped))) == 9
    assert len(epoch_order(10, epoch=0, seed=0, shuffle=False, drop_last=True, batch_size=4)) == 8


# ---------------------------------------------------------------------------------------- torchvision path


def test_torch_loader_is_deterministic_and_leaves_global_rng_alone(shapes_root):
    loader = _loader(shapes_root)
    assert len(loader) == 5
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = [(x.clone(), y.clone()) for x, y in loader]
    assert torch.equal(torch.get_rng_state(), state)
    assert first[0][0].shape == (8, 3, 32, 32) and first[0][1].dtype == torch.int64
    second = list(_loader(shapes_root, num_workers=1))  # a new loader, in a worker process
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], first[0][0])
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader))[0], first[0][0])


def test_ddp_shards_cover_the_split_once(shapes_root):
    labels = []
    for rank in range(2):
        loader = _loader(shapes_root, recipe="eval-plain", train=False, rank=rank, world_size=2, batch_size=7)
        assert len(loader) == 3
        labels.append(torch.cat([y for _, y in loader]))
    assert sum(len(x) for x in labels) == 40


def test_loader_argument_errors(shapes_root):
    with pytest.raises(DatasetError, match=r"unknown loader backend 'dali'"):
        _loader(shapes_root, backend="dali")
    with pytest.raises(DatasetError, match=r"rank must be in \[0, world_size\)"):
        _loader(shapes_root, rank=2, world_size=2)
    with pytest.raises(DatasetError, match=r"detection dataset"):
        build_loader("shapes_det", "train", image_size=32, batch_size=2, recipe="smoke", train=True)


# --------------------------------------------------------------------------------------------- ffcv path


def test_ffcv_and_torch_give_identical_batches_without_augmentation(shapes_root):
    pytest.importorskip("ffcv")
    threads = torch.get_num_threads()
    kw = dict(recipe="eval-plain", train=False, batch_size=16)
    torch_batches = list(_loader(shapes_root, backend="torch", **kw))
    ffcv_loader = _loader(shapes_root, backend="ffcv", ffcv_mode="raw", **kw)
    ffcv_batches = [(x.clone(), y.clone()) for x, y in ffcv_loader]
    assert len(ffcv_loader) == len(torch_batches) == 3
    assert [len(y) for _, y in ffcv_batches] == [16, 16, 8]  # no dropped last batch
    for (xt, yt), (xf, yf) in zip(torch_batches, ffcv_batches, strict=True):
        assert torch.equal(yt, yf)
        assert torch.equal(xt, xf)  # bit-identical images
    assert torch.get_num_threads() == threads  # importing and running ffcv must not change torch's thread count


def test_ffcv_augmentation_is_reproducible_per_epoch(shapes_root):
    pytest.importorskip("ffcv")
    loader = _loader(shapes_root, backend="ffcv", ffcv_mode="jpg", drop_last=True)
    assert len(loader) == 5
    first = [(x.clone(), y.clone()) for x, y in loader]
    again = [(x.clone(), y.clone()) for x, y in loader]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    loader.set_epoch(1)
    moved = [x.clone() for x, _ in loader]
    assert not torch.equal(moved[0], first[0][0])
    assert first[0][0].shape == (8, 3, 32, 32) and first[0][0].min() >= -1.0 and first[0][0].max() <= 1.0


def test_ffcv_write_fails_clearly_on_a_corrupt_image(tmp_path):
    pytest.importorskip("ffcv")
    prepare("shapes", tmp_path, n_train=10, n_test=2, image_size=24)
    victim = sorted((tmp_path / "shapes" / "train").rglob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:30])
    with pytest.raises(DatasetError, match=r"cannot read image .*corrupt or truncated"):
        build_loader("shapes", "train", root=tmp_path, image_size=24, batch_size=4, recipe="smoke", train=True,
                     backend="ffcv")  # fmt: skip
    assert not list((tmp_path / "ffcv").rglob("*.beton"))
