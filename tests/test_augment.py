"""The augmentation world (paper §2.3) and its image sources, on tiny files written in the real formats."""
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from envs.augment import ACTION_SETS, Augmentations, resample_matrix, shift_hue
from envs.images import (cifar100_images, digits_images, load_image_folder, procedural_images,
                         tiny_imagenet_images)
from seqjepa.options import ConfigError

SMALL = dict(image_size=16, num_classes=4, per_class=6)
IDENTITY = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # raw: whole image, no jitter, no blur


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- loaders -----------------------------------------------------------------------------------------------------


def write_cifar(root, n_train=4, n_test=2, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), b"fine_labels": [i % 2 for i in range(n)],
                 b"coarse_labels": [0] * n, b"filenames": [b"x.png"] * n, b"batch_label": b"b"}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)  # bytes keys + numpy reconstruction globals, as the real files
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [b"apple", b"bee"], b"coarse_label_names": [b"x"]}, f, protocol=4)
    return root


def test_cifar100_reads_the_python_format(tmp_path):
    root = write_cifar(tmp_path / "cifar-100-python")
    s = cifar100_images(root, "train")
    with open(root / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert s.images.shape == (4, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.labels.tolist() == [0, 1, 0, 1] and s.classes == ["apple", "bee"]
    assert s.images[1, 2, 0, 5] == raw[1, 2 * 1024 + 5]  # channel planes R, G, B, each row-major
    assert cifar100_images(root, "test", size=16).images.shape == (2, 3, 16, 16)


class Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless even if it ran; it must not even be looked up


def test_cifar100_refuses_foreign_globals_and_names_bad_files(tmp_path):
    root = write_cifar(tmp_path / "c")
    with open(root / "train", "wb") as f:
        pickle.dump({b"data": Evil(), b"fine_labels": []}, f, protocol=4)
    with pytest.raises(ValueError, match=r"refused global (posix|os|nt)\.getcwd") as e:
        cifar100_images(root, "train")
    assert str(root / "train") in str(e.value)
    (root / "test").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match="cannot read .*test"):
        cifar100_images(root, "test")
    write_cifar(tmp_path / "d")
    (tmp_path / "d" / "meta").unlink()
    with pytest.raises(ValueError, match="CIFAR-100: missing file .*meta; expected"):
        cifar100_images(tmp_path / "d", "train")


def write_jpeg(path, colour, size=(64, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", quality=95)


def test_tiny_imagenet_reads_train_and_val(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("n02\nn01\n")
    for w, colour in (("n02", (250, 10, 10)), ("n01", (10, 10, 250))):
        for i in range(2):
            write_jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", colour)
    write_jpeg(root / "val" / "images" / "val_0.JPEG", (10, 10, 250))
    write_jpeg(root / "val" / "images" / "val_1.JPEG", (250, 10, 10))
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t63\t63\nval_1.JPEG\tn02\t0\t0\t63\t63\n")
    train = tiny_imagenet_images(root, "train")
    assert train.images.shape == (4, 3, 64, 64) and train.classes == ["n02", "n01"]
    assert train.labels.tolist() == [0, 0, 1, 1] and train.images[0, 0].float().mean() > 200
    test = tiny_imagenet_images(root, "test", size=32)
    assert test.images.shape == (2, 3, 32, 32) and test.labels.tolist() == [1, 0]
    assert test.images[0, 2].float().mean() > 200  # val_0 is blue and labelled n01
    (root / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="val_1.JPEG"):
        tiny_imagenet_images(root, "test")


def test_image_folder_sorts_classes_and_squares_images(tmp_path):
    write_jpeg(tmp_path / "zebra" / "a.jpg", (0, 0, 0), (40, 20))
    (tmp_path / "ant").mkdir()
    Image.new("RGB", (20, 20), (255, 255, 255)).save(tmp_path / "ant" / "b.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "ant" / "c.BMP")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    s = load_image_folder(tmp_path, 16)
    assert s.classes == ["ant", "zebra"] and s.labels.tolist() == [0, 0, 1]
    assert s.images.shape == (3, 3, 16, 16)
    world = Augmentations(source="folder", root=str(tmp_path), image_size=16)  # no split folders: hold-out
    assert world.num_episodes == 3 and world.num_classes == 2
    for split, names in (("train", ["a", "b", "c"]), ("test", ["c"])):  # the test split lacks a class
        for name in names:
            (tmp_path / "split" / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "split" / split / name / "x.png")
    test = Augmentations(source="folder", root=str(tmp_path / "split"), image_size=8, split="test")
    assert test.num_classes == 3 and test._labels.tolist() == [2]
    (tmp_path / "zebra" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.png"):
        load_image_folder(tmp_path, 16)


def test_digits_have_a_fixed_disjoint_split():
    train, test = digits_images(16, "train"), digits_images(16, "test")
    assert len(train) + len(test) == 1797 and 300 < len(test) < 400
    assert train.images.shape[1:] == (3, 16, 16) and sorted(set(test.labels.tolist())) == list(range(10))


def test_procedural_classes_are_deterministic_distinct_and_learnable():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a = procedural_images(6, 30, 32, seed=0, split="train")
    assert torch.equal(a.images, procedural_images(6, 30, 32, seed=0, split="train").images)
    test = procedural_images(6, 30, 32, seed=0, split="test")
    assert not torch.equal(a.images, test.images) and len(set(a.classes)) == 6

    def features(s):  # translation-invariant edge spectrum: classes differ in shape, texture and count
        x = s.images.float() / 255
        e = ((x[..., 1:, :-1] - x[..., :-1, :-1]).abs() + (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()).sum(1)
        return torch.fft.fft2(e).abs()[:, :8, :8].flatten(1).log1p().numpy()

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features(a), a.labels.numpy())
    assert clf.score(features(test), test.labels.numpy()) > 0.5  # chance is 1/6


# -- the world ---------------------------------------------------------------------------------------------------


def test_world_is_deterministic():
    def run(seed):
        w, g = Augmentations(**SMALL), gen(seed)
        s = w.reset(5, g)
        views = [w.render(s)]
        for _ in range(2):
            s = w.step(s, w.sample_action(s, g), g)
            views.append(w.render(s))
        return torch.stack(views), s["params"]

    (v1, p1), (v2, p2), (v3, _) = run(0), run(0), run(1)
    assert torch.equal(v1, v2) and torch.equal(p1, p2) and not torch.equal(v1, v3)


@pytest.mark.parametrize("actions", ACTION_SETS)
def test_action_dims_and_factors(actions):
    w = Augmentations(actions=actions, **SMALL)
    dims = {"crop": 4, "jitter": 4, "blur": 1}
    names = actions.split("+")
    assert w.action_dim == sum(dims[k] for k in names) and list(w.factors) == names
    assert [f.stop - f.start for f in w.factors.values()] == [dims[k] for k in names]
    assert w.factors.get("blur", None) is None or w.factors["blur"].head == "linear"
    g = gen()
    s = w.reset(3, g)
    assert w.sample_action(s, g).shape == (3, w.action_dim) and w.action_low.shape == (w.action_dim,)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="actions"):
        Augmentations(actions="blur+crop", **SMALL)
    with pytest.raises(ConfigError, match="root"):
        Augmentations(source="cifar100")
    with pytest.raises(ConfigError, match="jitter_p"):
        Augmentations(jitter_p=1.5, **SMALL)


@pytest.mark.parametrize("actions", ["crop+jitter+blur", "crop", "jitter+blur"])
def test_step_with_relative_reaches_the_target(actions):
    w, g = Augmentations(actions=actions, **SMALL), gen()
    a, b = w.reset(64, g, torch.arange(64) % w.num_episodes), w.reset(64, g)
    reached = w.step(a, w.relative(a["params"], b["params"]), g)
    cols = torch.cat([torch.arange(w.factors[k].start, w.factors[k].stop) for k in w.factors])
    assert torch.allclose(w.relative(a["params"], reached["params"]), w.relative(a["params"], b["params"]),
                          atol=1e-5)
    assert len(cols) == w.action_dim and torch.equal(reached["episode"], a["episode"])
    assert ((reached["params"] >= -1e-6) & (reached["params"] <= 1 + 1e-6)).all()


def test_render_shape_dtype_and_blur_kernel():
    for size, kernel in ((16, 3), (32, 3), (64, 7)):
        w = Augmentations(image_size=size, num_classes=2, per_class=2)
        assert w._kernel == kernel
        v = w.render(w.reset(3, gen()))
        assert v.shape == (3, 3, size, size) and v.dtype == torch.uint8


def test_identity_params_reproduce_the_image():
    w, g = Augmentations(**SMALL), gen()
    s = w.reset(8, g)
    s["params"] = w.normalise(torch.tensor(IDENTITY)).expand(8, 9).clone()
    s["gray"][:] = False
    s["flip"][:] = False
    assert torch.equal(w.render(s), w._images[s["episode"]])
    assert torch.equal(w.clean_views(s["episode"]), w.render(s))  # the probes' clean image: no transformation
    s["flip"][:] = True
    assert torch.equal(w.render(s), w._images[s["episode"]].flip(-1))
    s["flip"][:] = False
    s["params"][:, 8] = 0.5  # sigma 1 px: now it is blurred
    assert not torch.equal(w.render(s), w._images[s["episode"]])


def test_params_are_normalised_per_feature():
    w, g = Augmentations(**SMALL), gen()
    low = torch.tensor([0, 0, 0, 0, 0.6, 0.6, 0.8, -0.1, 0.0])
    high = torch.tensor([1, 1, 1, 1, 1.4, 1.4, 1.2, 0.1, 2.0])
    assert torch.allclose(w.normalise(low), torch.zeros(9)) and torch.allclose(w.normalise(high), torch.ones(9))
    assert torch.allclose(w.normalise(torch.tensor(IDENTITY))[4:8], torch.full((4,), 0.5))
    # Actions do not depend on how long the sequence is (the official code normalises across time).
    s = w.reset(4, g)
    params = [s["params"]]
    for _ in range(5):
        s = w.step(s, w.sample_action(s, g), g)
        params.append(s["params"])
    p = torch.stack(params, 1)
    assert torch.equal(w.relative(p[:, :3], p[:, 1:4]), w.relative(p[:, :-1], p[:, 1:])[:, :3])


def test_sampling_follows_the_paper_ranges():
    w, g = Augmentations(**SMALL), gen()
    s = w.reset(4000, g)
    raw = w.denormalise(s["params"])
    area, ratio = raw[:, 2] * raw[:, 3], raw[:, 3] / raw[:, 2]
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 1 + 1e-5
    assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert ((raw[:, 0] + raw[:, 2]) <= 1 + 1e-5).all() and ((raw[:, 1] + raw[:, 3]) <= 1 + 1e-5).all()
    no_jitter = (raw[:, 4:8] - torch.tensor([1.0, 1.0, 1.0, 0.0])).abs().amax(1) < 1e-5
    assert abs(no_jitter.float().mean().item() - 0.2) < 0.03
    assert raw[:, 8].min() >= 0.1 - 1e-5 and raw[:, 8].max() <= 2.0 + 1e-5  # blur_p = 1
    assert abs(s["flip"].float().mean().item() - 0.5) < 0.04 and abs(s["gray"].float().mean().item() - 0.2) < 0.03
    assert not s["solarize"].any()
    sig = w.denormalise(Augmentations(blur_p=0.0, **SMALL).reset(100, g)["params"])[:, 8]
    assert (sig == 0).all()


def test_fast_kernels_match_their_references():
    from kornia.enhance import adjust_hue

    x, t = torch.rand(6, 3, 16, 16, generator=gen()), torch.rand(6, generator=gen(1)) * 0.2 - 0.1
    assert (shift_hue(x, t) - adjust_hue(x, t * 2 * math.pi)).abs().max() < 1e-5
    top, left = torch.tensor([0.0, 0.1, 0.3]), torch.tensor([0.2, 0.0, 0.5])
    h, w, flip = torch.tensor([1.0, 0.5, 0.6]), torch.tensor([0.8, 0.9, 0.5]), torch.tensor([False, True, False])
    x = x[:3]
    ours = resample_matrix(top, h, 16, "bicubic")[:, None] @ x @ resample_matrix(left, w, 16, "bicubic", flip)[:, None].mT
    z = torch.zeros(3)
    theta = torch.stack([torch.where(flip, -w, w), z, 2 * left + w - 1, z, h, 2 * top + h - 1], 1).view(3, 2, 3)
    ref = F.grid_sample(x, F.affine_grid(theta, [3, 3, 16, 16], align_corners=False), mode="bicubic",
                        padding_mode="border", align_corners=False)
    assert (ours - ref).abs().max() < 1e-4
