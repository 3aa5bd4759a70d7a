"""``repro bench-data``: images per second of the ffcv and torchvision loaders on the same generated JPEG images."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from repro.data.loaders import build_loader
from repro.data.paths import resolve_data_root
from repro.data.prepare import prepare
from repro.data.transforms import get_augmentation


@dataclass
class BenchResult:
    image_size: int
    num_images: int
    batch_size: int
    num_workers: int
    recipe: str
    epochs: int
    images_per_s: dict[str, float] = field(default_factory=dict)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-minute, when the run started

    def ratio(self, backend: str) -> float:
        return self.images_per_s[backend] / self.images_per_s["torch"]

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio_to_torch": {k: self.ratio(k) for k in self.images_per_s if k != "torch"}}

    def lines(self) -> list[str]:
        head = (
            f"bench-data: shapes {self.image_size}x{self.image_size} JPEG, {self.num_images} images, batch "
            f"{self.batch_size}, {self.num_workers} worker(s), recipe {self.recipe} (train), "
            f"{self.epochs} timed epoch(s) after one warm-up; {self.cpus} CPUs, load average "
            f"{self.load_average:.1f} at start"
        )
        rows = [head]
        for backend, rate in self.images_per_s.items():
            label = {
                "torch": "torchvision (JPEG files + PIL)",
                "ffcv-jpg": "ffcv (.beton, JPEG)",
                "ffcv-raw": "ffcv (.beton, raw)",
            }[backend]
            ratio = "" if backend == "torch" else f"  {self.ratio(backend):.2f}x torchvision"
            rows.append(f"  {label:<32}{rate:10.1f} images/s{ratio}")
        return rows


def _images_per_s(loader, epochs: int) -> float:
    for _ in loader:  # warm-up: ffcv compiles its pipeline, files enter the page cache
        pass
    count, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        for images, _ in loader:
            count += images.shape[0]
    return count / (time.perf_counter() - start)


def bench_data(
    root: str | os.PathLike | None = None,
    *,
    image_size: int = 96,
    num_images: int = 2000,
    batch_size: int = 64,
    num_workers: int = 1,
    epochs: int = 2,
    recipe: str = "sap-stl10",
    ffcv_modes: tuple[str, ...] = ("jpg", "raw"),
    seed: int = 0,
) -> BenchResult:
    """Time one training epoch pass of each loader over ``<root>/bench/shapes`` (generated, JPEG)."""
    get_augmentation(recipe)  # fail before writing anything
    bench_root = resolve_data_root(root) / "bench"
    prepare("shapes", bench_root, seed=seed, n_train=num_images, n_test=1, image_size=image_size, format="jpg")
    result = BenchResult(image_size, num_images, batch_size, num_workers, recipe, epochs)
    common = dict(
        root=bench_root,
        image_size=image_size,
        batch_size=batch_size,
        recipe=recipe,
        train=True,
        num_workers=num_workers,
        seed=seed,
    )
    result.images_per_s["torch"] = _images_per_s(build_loader("shapes", "train", backend="torch", **common), epochs)
    for mode in ffcv_modes:
        loader = build_loader("shapes", "train", backend="ffcv", ffcv_mode=mode, **common)
        result.images_per_s[f"ffcv-{mode}"] = _images_per_s(loader, epochs)
    return result
