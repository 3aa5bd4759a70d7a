"""An ffcv image decoder that applies a :class:`~repro.data.transforms.Augmentation` with reproducible randomness.

ffcv's own random decoders draw from numba's per-thread generator without a seed, so two runs differ. This decoder
seeds the generator for every sample from ``(seed, sample index, the batch's first and last index)``: a given
epoch order (fixed by seed and epoch) gives the same crops and flips on every run, whatever the number of threads.
Imported only when ffcv is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation

from repro.data.errors import DatasetError

MODE_FULL, MODE_CENTER, MODE_RANDOM, MODE_PAD = 0, 1, 2, 3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S33 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(33)


def mix64(x):
    """The splitmix64 finaliser: a well-spread 64-bit hash of ``x``."""
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


def random_resized_crop(height, width, scale_lo, scale_hi, log_ratio_lo, log_ratio_hi):
    """``(top, left, h, w)`` drawn as torchvision's RandomResizedCrop draws them (10 tries, then a centre crop)."""
    area = height * width
    for _ in range(10):
        target_area = area * np.random.uniform(scale_lo, scale_hi)
        aspect = np.exp(np.random.uniform(log_ratio_lo, log_ratio_hi))
        w = round(np.sqrt(target_area * aspect))
        h = round(np.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return np.random.randint(0, height - h + 1), np.random.randint(0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < np.exp(log_ratio_lo):
        w = width
        h = round(w / np.exp(log_ratio_lo))
    elif in_ratio > np.exp(log_ratio_hi):
        h = height
        w = round(h * np.exp(log_ratio_hi))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# Dispatchers compiled for each loader are kept for the life of the process: with numba >= 0.60, collecting a
# dispatcher that ffcv's pipeline called can fail inside numba's finaliser ("Exception ignored ... KeyError").
# Sharing one dispatcher between loaders fails the same way, so each loader compiles its own.
_KEEP_ALIVE: list = []


def compiled(function):
    dispatcher = Compiler.compile(function)
    _KEEP_ALIVE.append(dispatcher)
    return dispatcher


class RecipeImageDecoder(ResizedCropRGBImageDecoder):
    """Decode an :class:`~ffcv.fields.RGBImageField`, crop, resize to ``output_size``, pad-crop and flip.

    ``mode``: ``MODE_RANDOM`` (random-resized crop with ``scale``/``ratio``), ``MODE_CENTER`` (centre square covering
    ``fraction`` of the short side), ``MODE_FULL`` (whole image; images must all be ``output_size``), ``MODE_PAD``
    (RandomCrop with zero ``pad``; images must all be ``output_size``). ``flip``: random horizontal flip.
    """

    def __init__(
        self,
        output_size: tuple[int, int],
        mode: int,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        fraction: float = 1.0,
        pad: int = 0,
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(output_size)
        self.mode, self.scale, self.ratio, self.fraction = mode, scale, ratio, fraction
        self.pad, self.flip, self.seed = pad, flip, seed

    @property
    def get_crop_generator(self):  # required by the base class; the crop is chosen in generate_code
        return None

    def declare_state_and_memory(self, previous_state):
        if self.mode in (MODE_FULL, MODE_PAD):
            widths, heights = self.metadata["width"], self.metadata["height"]
            sizes = {(int(h), int(w)) for h, w in zip((heights.min(), heights.max()), (widths.min(), widths.max()))}
            if len(sizes) != 1 or (self.mode == MODE_PAD and sizes != {tuple(self.output_size)}):
                raise DatasetError(
                    f"this recipe keeps images at their stored size, but the .beton holds sizes from "
                    f"{heights.min()}x{widths.min()} to {heights.max()}x{widths.max()} (expected {self.output_size})"
                )
            self.output_size = next(iter(sizes))
        return super().declare_state_and_memory(previous_state)

    def generate_code(self) -> Callable:
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = compiled(imdecode)
        resize_crop_c = compiled(resize_crop)
        mix = compiled(mix64)
        crop_random = compiled(random_resized_crop)
        jpg = IMAGE_MODES["jpg"]
        mode, pad, flip, fraction = self.mode, self.pad, self.flip, self.fraction
        scale_lo, scale_hi = float(self.scale[0]), float(self.scale[1])
        log_lo, log_hi = float(np.log(self.ratio[0])), float(np.log(self.ratio[1]))
        seed = np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)
        randomised = mode in (MODE_RANDOM, MODE_PAD) or flip
        shift = np.uint64(33)

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            count = len(batch_indices)
            batch_key = mix(mix(seed ^ np.uint64(batch_indices[0])) ^ np.uint64(batch_indices[count - 1]))
            batch_key = mix(batch_key ^ np.uint64(count))
            for dst_ix in my_range(count):
                source_ix = batch_indices[dst_ix]
                if randomised:
                    np.random.seed(np.uint32(mix(batch_key ^ np.uint64(source_ix)) >> shift))
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    temp_buffer = temp_buffer.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                out = destination[dst_ix]
                if mode == MODE_PAD:
                    dy = np.random.randint(0, 2 * pad + 1) - pad
                    dx = np.random.randint(0, 2 * pad + 1) - pad
                    for y in range(out.shape[0]):
                        for x in range(out.shape[1]):
                            sy, sx = y + dy, x + dx
                            inside = 0 <= sy < height and 0 <= sx < width
                            for c in range(3):
                                out[y, x, c] = temp_buffer[sy, sx, c] if inside else 0
                else:
                    if mode == MODE_RANDOM:
                        top, left, h, w = crop_random(
                            np.int64(height), np.int64(width), scale_lo, scale_hi, log_lo, log_hi
                        )
                    elif mode == MODE_CENTER:
                        side = int(fraction * min(height, width))
                        top, left, h, w = (height - side) // 2, (width - side) // 2, side, side
                    else:
                        top, left, h, w = 0, 0, height, width
                    resize_crop_c(temp_buffer, top, top + h, left, left + w, out)
                if flip and np.random.rand() < 0.5:
                    last = out.shape[1] - 1
                    for y in range(out.shape[0]):
                        for x in range(out.shape[1] // 2):
                            for c in range(3):
                                out[y, x, c], out[y, last - x, c] = out[y, last - x, c], out[y, x, c]
            return destination[:count]

        decode.is_parallel = True
        return decode


class LookupNormalize(Operation):
    """``uint8 (B, H, W, 3)`` -> normalised ``float32 (B, 3, H, W)`` through a per-channel table of 256 values.

    The table is computed by torch with the exact operations of ``ToTensor`` + ``Normalize``, so the result is
    bit-identical to the torchvision path while the work runs in ffcv's loading thread.
    """

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = np.ascontiguousarray(table, dtype=np.float32)

    def generate_code(self) -> Callable:
        table = self.table
        my_range = Compiler.get_iterator()

        def normalise(images, destination):
            for i in my_range(images.shape[0]):
                image, out = images[i], destination[i]
                for y in range(image.shape[0]):
                    for x in range(image.shape[1]):
                        for c in range(3):
                            out[c, y, x] = table[c, image[y, x, c]]
            return destination[: images.shape[0]]

        normalise.is_parallel = True
        return normalise

    def declare_state_and_memory(self, previous_state):
        height, width, channels = previous_state.shape
        shape = (channels, height, width)
        return replace(previous_state, shape=shape, dtype=np.dtype("float32")), AllocationQuery(
            shape, np.dtype("float32")
        )
