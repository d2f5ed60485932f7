"""Train the digits evaluation classifier deterministically and write the weights the package ships.

    python scripts/train_digits_classifier.py   # writes scoresde/nets/digits_classifier.safetensors
    python scripts/train_digits_classifier.py --out FILE             # elsewhere, to compare

The recipe (fixed; the test split is used only for the accuracy printed at the end):

* :class:`scoresde.nets.classifier.ImageClassifier` ``((1, 8, 8), width=32, feature_dim=64,
  dropout=0.3)``, initial weights from a generator seeded with 0;
* Adam, learning rate 2e-3 with cosine decay to 0 over 4,000 updates of 64 images drawn by
  :class:`scoresde.datasets.EpochBatches` from the 1,497 training images (generator seed 0);
* each batch translated by a random shift of up to one pixel in each direction (background
  ``-1`` enters at the border), so the classifier does not depend on exact registration, which
  generated digits need not share;
* dropout from torch's global RNG seeded with 0; one CPU thread, so a rerun on the same machine
  and torch version reproduces the file bitwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scoresde.datasets import EpochBatches, load_dataset
from scoresde.nets.classifier import ImageClassifier, save_classifier

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "scoresde" / "nets" / "digits_classifier.safetensors"
)
STEPS, BATCH, LR, SEED = 4000, 64, 2e-3, 0


def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by ``(dy, dx) in {-1, 0, 1}^2`` (uniform), the border filled with -1."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    offsets = torch.randint(0, 3, (x.shape[0], 2), generator=generator).tolist()
    h, w = x.shape[2:]
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


def accuracy(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    data = load_dataset("digits")
    train, test = data.split("train"), data.split("test")
    generator = torch.Generator().manual_seed(SEED)
    model = ImageClassifier((1, 8, 8), width=32, feature_dim=64, dropout=0.3, generator=generator)
    batches = EpochBatches(train.x, BATCH, y=train.y)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    began = time.perf_counter()
    model.train()
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * step / STEPS))
        x, y = batches(generator)
        loss = F.cross_entropy(model(shift(x, generator)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.train()
    train_acc, test_acc = accuracy(model, train.x, train.y), accuracy(model, test.x, test.y)
    command = "python scripts/train_digits_classifier.py"
    save_classifier(
        model,
        args.out,
        {
            "test_accuracy": f"{test_acc:.4f}",
            "train_accuracy": f"{train_acc:.4f}",
            "command": command,
        },
    )
    print(
        f"trained in {time.perf_counter() - began:.0f} s; train accuracy {train_acc:.4f}, "
        f"test accuracy {test_acc:.4f} ({round(test_acc * len(test.y))}/{len(test.y)}); "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    sys.exit(main())
