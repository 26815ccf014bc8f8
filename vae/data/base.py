"""What every data module shares: seeded splits, the in-memory fast path, the per-item path, binarization.

Batches are ``(images, labels)``. Images travel as uint8 (four times fewer bytes than float32) and become
what the model reads on the training device, in ``on_after_batch_transfer``:

    pixels="unit"   float32 in [0, 1] (x / 255): for the Bernoulli and Gaussian likelihoods
    pixels="uint8"  the 8-bit integers themselves: for likelihoods over 8-bit values

Binarization (for a Bernoulli likelihood to be a real likelihood of the data):

    binarize="static"   each image is replaced once by a Bernoulli sample of its grey levels (seeded)
    binarize="dynamic"  training images are resampled every time they are served; validation and test
                        images are binarized once (seeded), so the validation ELBO is comparable over epochs

Two ways to serve a split:

- in memory (the fast path): the split is one uint8 tensor, moved once to the training device (the GPU
  when training there and it fits), and batches are slices of a seeded random permutation: no per-item
  Python, no workers. On by default for datasets stored as arrays (MNIST, Fashion-MNIST, CIFAR-10).
- per item: a map-style Dataset through a DataLoader with ``num_workers`` workers. The default for
  datasets of image files (CelebA, image folders); ``in_memory: true`` decodes them once instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vae.core.errors import ConfigError
from vae.core.pixels import as_unit

Batch = tuple[Tensor, Tensor]
Binarize = Literal["none", "static", "dynamic"]
Pixels = Literal["unit", "uint8"]
Stage = Literal["train", "val", "test"]


def bernoulli_pixels(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A Bernoulli sample of each pixel's grey level (uint8 0..255 → uint8 {0, 255})."""
    probs = images.float() / 255.0
    return (torch.bernoulli(probs, generator=generator) * 255).to(torch.uint8)


def seeded_generator(seed: int, *salt: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by a seed and a few integers (split, epoch, item), reproducibly."""
    return torch.Generator(device=device).manual_seed(hash((seed, *salt)) & 0x7FFF_FFFF_FFFF_FFFF)


def carve(n: int, holdout: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random split of range(n) into (n − holdout) and holdout indices."""
    if not 0 < holdout < n:
        raise ConfigError(f"the validation split must hold between 1 and {n - 1} images, got {holdout}")
    order = torch.randperm(n, generator=seeded_generator(seed, n))
    return order[holdout:], order[:holdout]


@dataclass(frozen=True)
class TensorSplit:
    """A split held in memory: uint8 images (n, c, h, w) and int64 labels (n,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Tensor) -> TensorSplit:
        return TensorSplit(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(self.images.to(device), self.labels.to(device))


class TensorBatches:
    """Serves batches of a ``TensorSplit`` by slicing a permutation: the in-memory fast path.

    The permutation is drawn from (seed, epoch), and dynamic binarization from (seed, epoch, batch, rank), so a
    resumed run sees the same batches. Under DDP each process takes every world_size-th index of the same
    permutation (equal shares when shuffling). It is resumable mid-epoch: ``state_dict`` records how many of
    this epoch's batches are done (``done``: Lightning's count), and after ``load_state_dict`` the next pass
    over the same epoch starts after them.
    """

    def __init__(
        self,
        split: TensorSplit,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        epoch: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
        dynamic_binarize: bool = False,
        done: Callable[[], int] = lambda: 0,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size
        self.dynamic_binarize = dynamic_binarize
        self.done = done
        self.resume: dict[str, int] | None = None

    def indices(self) -> Tensor:
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=seeded_generator(self.seed, self.epoch()))
            order = order[: n - n % self.world_size]  # equal shares, so every process runs as many steps
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size].to(self.split.images.device)

    def __len__(self) -> int:
        n = len(self.split)
        share = n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
        return -(-share // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch, resume, self.resume = self.epoch(), self.resume, None
        start = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        for i, index in enumerate(self.indices().split(self.batch_size)):
            if i < start:
                continue
            images = self.split.images[index]  # (b, c, h, w) uint8, on the split's device
            if self.dynamic_binarize:
                images = bernoulli_pixels(
                    images, seeded_generator(self.seed, epoch, i, self.rank, device=images.device)
                )
            yield images, self.split.labels[index]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch(), "batches": self.done()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume = dict(state)


class Binarized(Dataset):
    """Per-item binarization of a Dataset of (uint8 image, label): a fresh sample on every access
    (dynamic), or one fixed sample per item seeded by (seed, index) (static)."""

    def __init__(self, dataset: Dataset, *, seed: int | None) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Batch:
        image, label = self.dataset[index]
        generator = None if self.seed is None else seeded_generator(self.seed, index)
        return bernoulli_pixels(image, generator), label


Split = TensorSplit | Dataset


class ImageDataModule(pl.LightningDataModule, ABC):
    """Base class of every data module: image shape, seeded splits, fast or per-item serving.

    batch_size: images per batch (per process under DDP).
    num_workers: DataLoader workers for the per-item path, and for decoding image files into memory; None
        chooses per dataset (``num_workers_default``: 0 for arrays, 4 for image files).
    seed: the seed of the splits, the shuffling and static binarization.
    binarize: "none", "static" or "dynamic" (see the module docstring).
    pixels: "unit" for [0, 1] floats, "uint8" to keep the 8-bit integers.
    in_memory: serve from one uint8 tensor (fast path); None chooses per dataset (``in_memory_default``).

    Every data module declares what a model is built for: ``image_shape``, and ``context_size``, the size of the
    context each image comes with (the number of classes of integer labels, the length of float label vectors;
    None where the labels carry nothing a conditional model can take). The ``vae`` command links both into the
    model's constructor.

    Subclasses set ``image_shape``, implement ``load_splits``, and take their own keyword arguments and
    ``**options``, which they pass on to this constructor: each dataset's full signature (what
    ``vae fit --data.help <class>`` lists, with defaults) is its own arguments and these.
    """

    image_shape: tuple[int, int, int]
    context_size: int | None = None
    in_memory_default: ClassVar[bool] = True  # array datasets; file-per-image datasets say False
    num_workers_default: ClassVar[int] = 0  # arrays need none; file-per-image datasets say 4

    def __init__(
        self,
        *,
        batch_size: int = 128,
        num_workers: int | None = None,
        seed: int = 0,
        binarize: Binarize = "none",
        pixels: Pixels = "unit",
        in_memory: bool | None = None,
    ) -> None:
        super().__init__()
        num_workers = self.num_workers_default if num_workers is None else num_workers
        if batch_size < 1:
            raise ConfigError(f"data batch_size must be a positive integer, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"data num_workers must be 0 or more, got {num_workers}")
        if binarize not in ("none", "static", "dynamic"):
            raise ConfigError(f"data binarize must be 'none', 'static' or 'dynamic', got {binarize!r}")
        if pixels not in ("unit", "uint8"):
            raise ConfigError(f"data pixels must be 'unit' or 'uint8', got {pixels!r}")
        if pixels == "uint8" and binarize != "none":
            raise ConfigError("binarized images are 0/1, not 8-bit values: use pixels 'unit' with binarize")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.binarize = binarize
        self.pixels = pixels
        self.in_memory = self.in_memory_default if in_memory is None else in_memory
        self.splits: dict[Stage, Split] = {}
        self._on_device: dict[Stage, TensorSplit] = {}

    @abstractmethod
    def load_splits(self) -> dict[Stage, Split]:
        """Read the data: every split as a ``TensorSplit`` or a per-item Dataset of (uint8 image, label)."""

    def check_files(self) -> None:
        """Raise a one-line ``DataError`` now if the files are missing (and will not be downloaded): the
        ``vae`` command calls it before it builds the Trainer, so nothing is written."""

    def prepare_data(self) -> None:
        self.check_files()

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        splits = self.load_splits()
        if self.in_memory:
            splits = {name: as_tensor_split(split, num_workers=self.num_workers) for name, split in splits.items()}
        if self.binarize != "none":
            splits = {name: self.binarize_once(name, split) for name, split in splits.items()}
        self.splits = splits

    def binarize_once(self, name: Stage, split: Split) -> Split:
        """Static binarization of a split (dynamic binarization leaves the training split grey)."""
        if name == "train" and self.binarize == "dynamic":
            return split
        if isinstance(split, TensorSplit):
            return TensorSplit(bernoulli_pixels(split.images, seeded_generator(self.seed, len(split))), split.labels)
        return Binarized(split, seed=self.seed)

    # -- serving ------------------------------------------------------------------------------------------

    def device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def resident(self, name: Stage, split: TensorSplit) -> TensorSplit:
        """The split on the training device, if it fits in half the free accelerator memory; else on the CPU."""
        device = self.device()
        if device.type != "cuda":
            return split
        if name not in self._on_device:
            free, _ = torch.cuda.mem_get_info(device)
            nbytes = split.images.nbytes + split.labels.nbytes
            self._on_device[name] = split.to(device) if nbytes < free // 2 else split
        return self._on_device[name]

    def loader(self, name: Stage, *, shuffle: bool) -> TensorBatches | DataLoader:
        split = self.splits[name]
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        dynamic = name == "train" and self.binarize == "dynamic"
        if isinstance(split, TensorSplit):
            return TensorBatches(
                self.resident(name, split),
                batch_size=self.batch_size,
                shuffle=shuffle,
                seed=self.seed,
                epoch=lambda: trainer.current_epoch if trainer is not None else 0,
                rank=rank,
                world_size=world_size,
                dynamic_binarize=dynamic,
                done=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.completed if shuffle and trainer else 0,
            )
        return DataLoader(
            Binarized(split, seed=None) if dynamic else split,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.device().type == "cuda",
        )

    def train_dataloader(self) -> TensorBatches | DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches | DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches | DataLoader:
        return self.loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = batch
        return (images if self.pixels == "uint8" else as_unit(images)), labels


def dataset_size(loader: object) -> int | None:
    """The number of examples a loader serves in all (over every process under DDP), or None if it cannot say:
    a ``TensorBatches``'s split, a DataLoader's dataset, the first of a list of loaders."""
    if isinstance(loader, list | tuple):
        return dataset_size(loader[0]) if loader else None
    if isinstance(loader, TensorBatches):
        return len(loader.split)
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:  # an iterable dataset
        return None


def as_tensor_split(split: Split, *, num_workers: int = 0, batch_size: int = 256) -> TensorSplit:
    """Decode a per-item Dataset once into one uint8 tensor (with workers); TensorSplits pass through."""
    if isinstance(split, TensorSplit):
        return split
    if isinstance(split, TensorDataset):
        return TensorSplit(*split.tensors)
    images, labels = [], []
    for x, y in DataLoader(split, batch_size=batch_size, num_workers=num_workers):
        images.append(x)
        labels.append(y)
    return TensorSplit(torch.cat(images), torch.cat(labels))
