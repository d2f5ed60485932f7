"""Image data: the digits split, IDX and .npz readers (on files written here), the batch stream, and
the one data protocol shared with the toy densities."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from scoresde.datasets import (
    DATASETS,
    FASHION_MNIST_DIR,
    DataFileError,
    Dataset,
    EpochBatches,
    LabelledBatch,
    fashion_mnist,
    get_dataset,
    load_dataset,
    mnist,
    npz_images,
    read_idx,
    stratified_split,
)
from scoresde.display import image_grid
from scoresde.losses import dsm_loss
from scoresde.nets import MLPScoreNet
from scoresde.score import get_score_fn
from scoresde.sde import VPSDE
from scoresde.training import train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# -- digits ----------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_covers_the_set(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = digits.split("train"), digits.split("test")
    assert digits.shape == (1, 8, 8) and digits.num_levels == 17 and digits.num_classes == 10
    assert digits.data_range == (-1.0, 1.0)
    assert len(train.x) == 1497 and len(test.x) == 300

    # Every image of scikit-learn's set is in exactly one split, with its label (multiset equality
    # of (image, label) pairs; duplicates in the set are counted).
    def keyed(s):
        return sorted(zip(s.levels.flatten(1).tolist(), s.y.tolist(), strict=True))

    want = sorted(
        zip(bunch.images.reshape(-1, 64).astype(int).tolist(), bunch.target.tolist(), strict=True)
    )
    assert sorted(keyed(train) + keyed(test)) == want
    # Stratified: each class holds its share of 300 to within the rounding (n_c / 1797 * 300).
    counts = np.bincount(bunch.target)
    shares = np.bincount(test.y.numpy(), minlength=10)
    assert shares.sum() == 300 and np.all(np.abs(shares - 300 * counts / 1797) < 1)
    # Fixed: a second load is the same split.
    again = load_dataset("digits").split("test")
    assert torch.equal(again.levels, test.levels) and torch.equal(again.y, test.y)


def test_digits_levels_scale_to_minus_one_one_and_back(digits):
    test = digits.split("test")
    assert test.levels.dtype == torch.int64 and int(test.levels.min()) == 0
    assert int(test.levels.max()) == 16
    torch.testing.assert_close(test.x, -1 + 2 * test.levels.float() / 16, rtol=0, atol=0)
    torch.testing.assert_close(digits.to_data(test.x), test.levels.float(), rtol=0, atol=2e-6)
    # A subset of n is drawn without replacement from the generator.
    sub = digits.split("test", n=50, generator=torch.Generator().manual_seed(3))
    assert sub.x.shape == (50, 1, 8, 8) and sub.y.shape == (50,)
    rows = [next(i for i in range(300) if torch.equal(test.levels[i], lv) and test.y[i] == y)
            for lv, y in zip(sub.levels, sub.y, strict=True)]  # fmt: skip
    assert len(rows) == 50


def test_stratified_split_largest_remainder():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)  # quotas for 4 test items: 2, 1.2, 0.8
    train, test = stratified_split(10, 4, labels=labels, seed=1)
    assert torch.bincount(labels[test], minlength=3).tolist() == [2, 1, 1]
    assert sorted(train.tolist() + test.tolist()) == list(range(10))
    assert torch.equal(stratified_split(10, 4, labels=labels, seed=1)[1], test)
    assert len(stratified_split(10, 3)[1]) == 3
    with pytest.raises(ValueError, match=r"test_size must be an integer in \[1, 9\]; got 10"):
        stratified_split(10, 10)


# -- IDX files -------------------------------------------------------------------------------------


def write_idx(path, array, *, zipped=False, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if zipped else raw)


def write_mnist(directory, *, n_train=6, n_test=4, zipped=True, size=5):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    directory.mkdir(exist_ok=True)
    for stem, array in arrays.items():
        write_idx(directory / (stem + (".gz" if zipped else "")), array, zipped=zipped)
    return arrays


@pytest.mark.parametrize("zipped", [True, False])
@pytest.mark.parametrize("loader", [mnist, fashion_mnist])
def test_idx_datasets_read_the_four_files(tmp_path, zipped, loader):
    arrays = write_mnist(tmp_path / "data", zipped=zipped)
    data = loader(tmp_path / "data")
    assert data.shape == (1, 5, 5) and data.num_levels == 256 and data.num_classes == 10
    test = data.split("test")
    np.testing.assert_array_equal(test.levels[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    train = data.split("train")
    np.testing.assert_array_equal(train.levels[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    torch.testing.assert_close(train.x, -1 + 2 * train.levels.float() / 255, rtol=0, atol=1e-7)


def test_read_idx_recognises_gzip_by_its_bytes(tmp_path):
    array = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "plain-name", array, zipped=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-name"), array)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not idx"), "not an IDX file"),
        (lambda p: write_idx(p, np.zeros((2, 3)), type_code=0x0D), "type code must be 0x08"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), r"shape \(2, 3\) needs 18 bytes, .* has 17"),
        (lambda p: p.write_bytes(b"\x1f\x8bbroken gzip"), "cannot be read"),
    ],
)
def test_malformed_idx_files_are_named(tmp_path, corrupt, message):
    path = tmp_path / "x.idx"
    write_idx(path, np.zeros((2, 3)))
    corrupt(path)
    with pytest.raises(DataFileError, match=message) as err:
        read_idx(path, remedy="get a fresh copy")
    assert str(err.value).startswith(str(path)) and str(err.value).endswith("get a fresh copy")
    assert "\n" not in str(err.value)


def test_missing_idx_files_say_where_to_get_them(tmp_path):
    with pytest.raises(DataFileError, match="no such directory.*dataset-fashion-mnist"):
        fashion_mnist(tmp_path / "absent")
    write_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DataFileError, match=r"t10k-labels-idx1-ubyte: no such file \(nor with .gz\)"
    ):
        mnist(tmp_path / "partial")
    with pytest.raises(DataFileError, match="MNIST IDX files"):
        mnist(tmp_path / "partial")
    write_mnist(tmp_path / "mismatch")
    write_idx(tmp_path / "mismatch" / "train-labels-idx1-ubyte.gz", np.zeros(5), zipped=True)
    with pytest.raises(DataFileError, match="expected 6 labels, one per image"):
        mnist(tmp_path / "mismatch")


def test_fashion_mnist_defaults_to_debians_directory():
    assert FASHION_MNIST_DIR.as_posix() == "/usr/share/datasets/fashion-mnist"
    if FASHION_MNIST_DIR.is_dir():
        data = fashion_mnist()
        assert len(data) == 60_000 and len(data.split("test").x) == 10_000
    else:
        with pytest.raises(DataFileError, match="apt-get install|dataset-fashion-mnist"):
            load_dataset("fashion_mnist")


# -- .npz files ------------------------------------------------------------------------------------


def test_npz_images_with_and_without_labels(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 4, 6, 3), dtype=np.uint8)
    labels = np.repeat([0, 1, 2, 3], 5)
    np.savez(tmp_path / "mine.npz", images=images, labels=labels)
    data = npz_images(tmp_path / "mine.npz", test_size=0.2)
    assert data.name == "mine" and data.shape == (3, 4, 6) and data.num_classes == 4
    test = data.split("test")
    assert len(test.x) == 4 and torch.bincount(test.y).tolist() == [1, 1, 1, 1]  # stratified
    # Channels last in the file, channels first in the dataset, values unchanged.
    every = torch.cat([data.split("train").levels, test.levels]).permute(0, 2, 3, 1)
    assert sorted(map(bytes, every.to(torch.uint8).numpy())) == sorted(map(bytes, images))

    np.savez(tmp_path / "grey.npz", images=images[..., 0])
    grey = load_dataset("npz", path=tmp_path / "grey.npz", test_size=5)
    assert grey.shape == (1, 4, 6) and grey.num_classes is None and len(grey.split("test").x) == 5
    assert grey.split("test").y is None
    with pytest.raises(
        ValueError, match=r"labels must be False for a dataset without labels \('grey'\); got True"
    ):
        grey.batches(4, labels=True)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pixels": np.zeros((3, 2, 2), np.uint8)}, r"no 'images' array \(found pixels\)"),
        ({"images": np.zeros((3, 2, 2), np.float32)}, "'images' is float32 of shape"),
        ({"images": np.zeros((3, 2, 2, 2), np.uint8)}, "'images' has 2 channels; expected 1 or 3"),
        ({"images": np.zeros((3, 2, 2), np.uint8), "labels": np.array([0, 1])}, "'labels' is int"),
        (
            {"images": np.zeros((3, 2, 2), np.uint8), "labels": np.array([0, -1, 1])},
            "integers >= 0",
        ),
    ],
)
def test_malformed_npz_files_are_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFileError, match=message) as err:
        npz_images(path, test_size=1)
    assert str(err.value).startswith(str(path)) and "numpy.savez" in str(err.value)


def test_missing_npz_file_and_bad_test_size(tmp_path):
    with pytest.raises(DataFileError, match="absent.npz: no such file; expected an .npz"):
        npz_images(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataFileError, match="not a readable .npz"):
        npz_images(tmp_path / "text.npz")
    np.savez(tmp_path / "ok.npz", images=np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"test_size must be a number in \(0, 1\); got 1.5"):
        npz_images(tmp_path / "ok.npz", test_size=1.5)
    with pytest.raises(ValueError, match=r"test_size must be an integer in \[1, 3\]; got 4"):
        npz_images(tmp_path / "ok.npz", test_size=4)


# -- the batch stream ------------------------------------------------------------------------------


def test_epoch_batches_visit_a_permutation_each_epoch():
    x = torch.arange(10.0)[:, None]
    stream = EpochBatches(x, 3)  # 3 batches of 3 per epoch; one row waits each epoch
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    epochs = [torch.cat([stream(g) for _ in range(3)]).flatten().long() for _ in range(4)]
    assert torch.equal(g.get_state(), state)  # the generator's state is not consumed
    for rows in epochs:
        assert len(set(rows.tolist())) == 9
    assert len({tuple(e.tolist()) for e in epochs}) == 4  # a new order every epoch
    # The same seed gives the same stream; another seed another one.
    replay = EpochBatches(x, 3)
    assert torch.equal(
        torch.cat([replay(torch.Generator().manual_seed(5)) for _ in range(3)]).flatten().long(),
        epochs[0],
    )
    other = EpochBatches(x, 3)
    assert not torch.equal(
        torch.cat([other(torch.Generator().manual_seed(6)) for _ in range(3)]).flatten().long(),
        epochs[0],
    )


def test_epoch_batches_leave_out_each_row_equally_often():
    """Over many epochs each of the N mod B = 1 left-out rows is uniform over the 4 rows: with 400
    epochs each count is Binomial(400, 1/4), 100 +- 8.7; 40 is 7 standard deviations away."""
    stream = EpochBatches(torch.arange(4.0)[:, None], 3)
    seen = torch.zeros(4)
    for k in range(400):
        seen[stream.indices(11, k)] += 1
    assert torch.all((400 - seen - 100).abs() < 40)


def test_epoch_batches_resume_from_the_generator_seed_and_step():
    x, y = torch.randn(23, 2), torch.arange(23)
    g = torch.Generator().manual_seed(7)
    whole = EpochBatches(x, 4, y=y)
    first = [whole(g) for _ in range(20)]
    resumed_g = torch.Generator()
    resumed_g.set_state(torch.Generator().manual_seed(7).get_state())
    resumed = EpochBatches(x, 4, y=y, start=12)
    for k in range(12, 20):
        batch = resumed(resumed_g)
        assert isinstance(batch, LabelledBatch)
        assert torch.equal(batch.x, first[k].x) and torch.equal(batch.y, first[k].y)
        assert torch.equal(batch.x, x[batch.y])  # labels travel with their rows
    assert batch.to("cpu").x is not None


def test_epoch_batches_bad_arguments():
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 5\]; got 6"):
        EpochBatches(torch.zeros(5, 1), 6)
    with pytest.raises(ValueError, match=r"start must be an integer >= 0; got -1"):
        EpochBatches(torch.zeros(5, 1), 2, start=-1)
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        EpochBatches(torch.zeros(5, 1), 2, y=torch.zeros(4))


def test_a_resumed_training_run_sees_the_same_batches(tmp_path, digits):
    """train() on the digits stream: 4 updates, or 2 then a resume to 4, give the same weights."""
    sde = VPSDE()

    def loss_fn(model, x, generator):
        return dsm_loss(sde, get_score_fn(sde, model), x, eps=1e-3, generator=generator)

    def run(workdir, n_iters, start):
        model = MLPScoreNet(64, hidden=16, depth=1, generator=torch.Generator().manual_seed(0))
        train(model, loss_fn, digits.batches(32, start=start), n_iters=n_iters, lr=1e-3, seed=3,
              workdir=workdir, checkpoint_every=2, progress=False)  # fmt: skip
        return model.state_dict()

    whole = run(tmp_path / "a", 4, 0)
    run(tmp_path / "b", 2, 0)
    resumed = run(tmp_path / "b", 4, 2)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # A stream that does not skip the first two batches on resume trains on other data.
    run(tmp_path / "c", 2, 0)
    wrong = run(tmp_path / "c", 4, 0)
    assert not all(torch.equal(whole[k], wrong[k]) for k in whole)


# -- one protocol ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard", "digits"])
def test_toy_and_image_data_answer_the_same_protocol(name, digits):
    data = digits if name == "digits" else load_dataset(name)
    assert isinstance(data, Dataset)
    g = torch.Generator().manual_seed(0)
    batch = data.batches(16)(g)
    assert batch.shape == (16, *data.shape) and batch.dtype == torch.float32
    held_out = data.split("test", n=64, generator=g)
    assert held_out.x.shape == (64, *data.shape)
    fig = Figure()
    data.show(fig.subplots(), held_out.x)
    fig.savefig(__import__("io").BytesIO(), format="png")
    if data.num_levels is None:  # continuous: no levels, no range, model units are data units
        assert held_out.levels is None and data.data_range is None
        assert torch.equal(data.to_data(held_out.x), held_out.x)
    else:
        lo, hi = data.data_range
        assert held_out.x.min() >= lo and held_out.x.max() <= hi


def test_toy_protocol_refusals():
    data = get_dataset("moons")
    assert data.shape == (2,) and data.num_classes is None
    with pytest.raises(
        ValueError, match=r"labels must be False for a dataset without labels \('moons'\); got True"
    ):
        data.batches(8, labels=True)
    with pytest.raises(ValueError, match=r"n must be an integer >= 1; got None"):
        data.split("test")
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'test'; got 'val'"):
        data.split("val", n=3)


def test_the_registry_holds_every_dataset():
    assert {"digits", "mnist", "fashion_mnist", "npz", "8gaussians", "checkerboard"} <= set(
        DATASETS
    )
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="got unknown 'path'"):
        load_dataset("digits", path="x")


def test_image_grid_tiles_and_scales():
    x = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0, 3.0)])
    grid = image_grid(x, value_range=(-1.0, 1.0), ncols=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)
    assert grid[1, 1, 0] == 0.0 and grid[1, 4, 0] == 0.5 and grid[1, 7, 0] == 1.0
    assert grid[4, 1, 0] == 1.0  # clipped
    assert grid[4, 4, 0] == 0.5 and grid[0, 0, 0] == 0.5  # empty cell and padding: mid grey
    assert math.isclose(grid.max(), 1.0)
