"""ffcv: write a classification dataset to ``.beton`` and read it back with ffcv's ``Loader``.

ffcv is optional: it is imported inside these functions only. Fields: ``image`` (``RGBImageField``, raw pixels or
JPEG) and ``label`` (``IntField``).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.data.errors import DatasetError
from repro.data.transforms import Augmentation, normalise_uint8
from repro.utils.atomic import atomic_path, write_json_atomic

WRITE_MODES = ("raw", "jpg")


def require_ffcv() -> None:
    """Fail with the install command when ffcv is not importable (importing it sets torch's thread count to 1:
    the count is restored)."""
    threads = torch.get_num_threads()
    try:
        import ffcv  # noqa: F401
    except ImportError as err:
        raise DatasetError(
            f"backend 'ffcv' needs the ffcv package ({err}); install it with `pip install -e .[ffcv]` "
            "(see docs/data.md) or use backend 'torch'"
        ) from None
    finally:
        torch.set_num_threads(threads)


def beton_path(root: Path, name: str, split: str, mode: str, max_resolution: int | None = None) -> Path:
    """``<root>/ffcv/<name>/<split>-<mode>[-max<R>].beton``."""
    suffix = f"-max{max_resolution}" if max_resolution else ""
    return Path(root) / "ffcv" / name / f"{split}-{mode}{suffix}.beton"


class _SafeSamples:
    """Wraps a dataset for ffcv's writer processes: a failing sample is recorded and replaced by a blank one, so the
    writer finishes instead of waiting forever for a worker that died; the caller then raises."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.failed = multiprocessing.Value(ctypes.c_int64, -1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            image, label = self.dataset[index]
            return np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8), int(label)
        except Exception:
            with self.failed.get_lock():
                if self.failed.value < 0:
                    self.failed.value = index
            return np.zeros((8, 8, 3), dtype=np.uint8), 0


def write_beton(
    dataset: Dataset,
    path: Path,
    *,
    mode: str = "raw",
    max_resolution: int | None = None,
    jpeg_quality: int = 90,
    num_workers: int = 1,
    fingerprint: str | None = None,
) -> Path:
    """Write ``dataset`` (``(PIL image, label)`` items) to ``path`` atomically; skipped when the sidecar
    ``<path>.json`` already records the same fingerprint and options."""
    require_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if mode not in WRITE_MODES:
        raise DatasetError(f"ffcv write mode must be one of {WRITE_MODES}, got {mode!r}")
    path = Path(path)
    info = {
        "num_samples": len(dataset),
        "mode": mode,
        "max_resolution": max_resolution,
        "jpeg_quality": jpeg_quality,
        "fingerprint": fingerprint,
    }
    sidecar = path.with_name(path.name + ".json")
    if path.is_file() and read_sidecar(sidecar) == info:
        return path
    if len(dataset) == 0:
        raise DatasetError(f"cannot write {path}: the dataset is empty")
    samples = _SafeSamples(dataset)
    fields = {
        "image": RGBImageField(write_mode=mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality),
        "label": IntField(),
    }
    with atomic_path(path) as tmp:
        DatasetWriter(str(tmp), fields, num_workers=max(1, num_workers)).from_indexed_dataset(samples, chunksize=64)
        if samples.failed.value >= 0:
            index = samples.failed.value
            try:
                dataset[index]
            except DatasetError:
                raise
            except Exception as err:
                raise DatasetError(f"cannot write {path}: sample {index} fails to load ({err})") from None
            raise DatasetError(f"cannot write {path}: sample {index} failed to load while writing")
    write_json_atomic(sidecar, info)
    return path


def read_sidecar(sidecar: Path) -> dict | None:
    """The options a ``.beton`` was written with (``<beton>.json``), or None when the file is absent or unreadable
    (the ``.beton`` is then written again)."""
    try:
        info = json.loads(sidecar.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return info if isinstance(info, dict) else None


def decoder_for(recipe: Augmentation, image_size: int, train: bool, seed: int):
    """The :class:`~repro.data.ffcv_ops.RecipeImageDecoder` that mirrors ``recipe`` (already resolved)."""
    from repro.data import ffcv_ops as ops

    size = (image_size, image_size)
    if train and recipe.crop_scale is not None:
        return ops.RecipeImageDecoder(
            size, ops.MODE_RANDOM, scale=recipe.crop_scale, ratio=recipe.crop_ratio, flip=recipe.flip, seed=seed
        )
    if train and recipe.pad_crop:
        return ops.RecipeImageDecoder(size, ops.MODE_PAD, pad=recipe.pad_crop, flip=recipe.flip, seed=seed)
    flip = train and recipe.flip
    if recipe.eval_fraction is None:
        return ops.RecipeImageDecoder(size, ops.MODE_FULL, flip=flip, seed=seed)
    return ops.RecipeImageDecoder(size, ops.MODE_CENTER, fraction=recipe.eval_fraction, flip=flip, seed=seed)


class _FixedOrder:
    """Stands in for ffcv's traversal order: the loader reads exactly the indices we computed for the epoch."""

    def __init__(self, order: np.ndarray) -> None:
        self.order = order

    def sample_order(self, epoch: int) -> np.ndarray:
        return self.order


class FfcvBatches:
    """An ffcv ``Loader`` over one ``.beton`` whose sample order is set per epoch from outside.

    Yields ``(float images (B, 3, S, S) normalised, int64 labels (B,))`` on ``device``, in the order given (no
    drop_last here: the caller trims the order). On CPU the normalisation runs in ffcv's thread through a table
    computed by torch (bit-identical to ``ToTensor`` + ``Normalize``); on CUDA uint8 images are moved and normalised
    on the GPU. ffcv reuses its output buffers, so every batch is copied before it is handed out.
    """

    def __init__(
        self,
        path: Path,
        *,
        recipe: Augmentation,
        image_size: int,
        train: bool,
        batch_size: int,
        num_workers: int,
        seed: int,
        device: torch.device,
        mean,
        std,
    ) -> None:
        require_ffcv()
        from ffcv.fields.decoders import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage

        from repro.data.ffcv_ops import LookupNormalize

        self.device, self.mean, self.std = device, mean, std
        decoder = decoder_for(recipe, image_size, train, seed)
        label_pipeline = [IntDecoder(), ToTensor(), Squeeze()]
        if device.type == "cuda":
            image_pipeline = [decoder, ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage()]
            label_pipeline.append(ToDevice(device, non_blocking=True))
        else:
            values = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 1, 256)
            table = normalise_uint8(values, mean, std)[0, :, 0, :].numpy()
            image_pipeline = [decoder, LookupNormalize(table), ToTensor()]
        threads = torch.get_num_threads()
        try:
            self.loader = Loader(
                str(path),
                batch_size=batch_size,
                num_workers=max(1, num_workers),
                order=OrderOption.SEQUENTIAL,
                drop_last=False,
                pipelines={"image": image_pipeline, "label": label_pipeline},
                batches_ahead=2,
            )
        finally:
            torch.set_num_threads(threads)  # ffcv sets torch's thread count to its worker count
        self.threads = threads

    @property
    def num_samples(self) -> int:
        return int(self.loader.reader.num_samples)

    def iterate(self, order: Sequence[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the samples ``order``, in that order."""
        self.loader.traversal_order = _FixedOrder(np.asarray(order, dtype=np.uint64))
        epoch = iter(self.loader)
        try:
            while (batch := _next_batch(epoch)) is not None:
                if torch.get_num_threads() != self.threads:
                    torch.set_num_threads(self.threads)
                images, labels = batch
                images = normalise_uint8(images, self.mean, self.std) if self.device.type == "cuda" else images.clone()
                yield images, labels.to(torch.int64, copy=True)
        finally:
            epoch.close()
            torch.set_num_threads(self.threads)


def _next_batch(epoch, poll_s: float = 1.0):
    """The next batch of an ffcv ``EpochIterator``, or None at the end.

    As ``EpochIterator.__next__``, but an error in ffcv's pipeline thread (which would otherwise leave the caller
    waiting forever) raises here.
    """
    import queue

    while True:
        try:
            item = epoch.output_queue.get(timeout=poll_s)
            break
        except queue.Empty:
            if not epoch.is_alive():
                raise DatasetError(
                    "the ffcv loading thread stopped with an error (its traceback is printed above); "
                    "check the .beton or use backend 'torch'"
                ) from None
    if item is None:
        return None
    slot, result = item
    if torch.cuda.is_available():
        epoch.current_stream.wait_stream(epoch.cuda_streams[slot])
    return result
