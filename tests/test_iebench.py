"""3DIEBench from disk, on a tiny tree in the real format (tests/iebench_tree.py)."""
import os
import shutil

import numpy as np
import pytest
import torch

import envs
from envs import rotations as rt
from envs.iebench import IEBench
from iebench_tree import write_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("3diebench"))


def latent(root, path, i):
    return torch.as_tensor(np.load(root / path / f"latent_{i}.npy"), dtype=torch.float32)


def test_reads_the_real_layout(tree):
    train, test = IEBench(root=str(tree), image_size=16), IEBench(root=str(tree), split="test", image_size=16)
    assert train.num_episodes == test.num_episodes == 2 and train.num_classes == test.num_classes == 2
    g = torch.Generator().manual_seed(0)
    state = train.reset(2, g, torch.tensor([0, 1]))
    assert state["label"].tolist() == [0, 1]
    views = train.render(state)
    assert views.shape == (2, 3, 16, 16) and views.dtype == torch.uint8
    for k in range(2):
        expected = latent(tree, "02691156/02691156obj0" if k == 0 else "03001627/03001627obj0", int(state["view"][k]))
        assert torch.allclose(state["params"][k], expected)


@pytest.mark.parametrize("actions", ["rotation", "color", "rotation+color"])
def test_relative_actions_match_the_latents(tree, actions):
    world = IEBench(root=str(tree), image_size=16, actions=actions, canonical_quat=False)
    ids, lat = world.object_views(0)
    assert ids.tolist() == [0, 1, 2, 3]
    for i in range(4):
        for j in range(4):
            rel = world.relative(lat[i], lat[j])
            R = rt.euler_to_matrix(lat[i, :3]).T @ rt.euler_to_matrix(lat[j, :3])  # R_i^-1 R_j
            parts = []
            if actions != "color":
                q = rt.matrix_to_quat(R)
                assert torch.allclose(rt.quat_to_matrix(rel[:4]), R, atol=1e-5)
                assert torch.allclose(rel[:4], q, atol=1e-5)
                parts.append(q)
            if actions != "rotation":
                dh = lat[j, [3, 6]] - lat[i, [3, 6]]  # the official plain difference, not wrapped
                parts.append(dh)
            assert torch.allclose(rel, torch.cat(parts), atol=1e-5)
    assert rel.shape == (world.action_dim,)


def test_step_moves_to_the_nearest_view(tree):
    world = IEBench(root=str(tree), image_size=16)
    g = torch.Generator().manual_seed(1)
    ids, lat = world.object_views(1)
    state = world.reset(1, g, torch.tensor([1]))
    for _ in range(6):  # sample_action names another view; step lands on it exactly
        a = world.sample_action(state, g)
        new = world.step(state, a, g)
        assert new["view"] != state["view"]
        assert torch.allclose(world.relative(state["params"], new["params"]), a, atol=1e-5)
        state = new
    # A perturbed (and sign-flipped) request still lands on the nearest view.
    target = 3 if int(state["view"]) != 3 else 0
    a = world.relative(state["params"][0], lat[target])
    noisy = -(a + 0.01 * torch.tensor([1.0, -1.0, 0.5, 0.0]))
    dists = [float(world.action_distance(world.relative(state["params"][0], lat[k])[None], noisy)) for k in range(4)]
    assert int(np.argmin(dists)) == target
    assert int(world.step(state, noisy[None], g)["view"]) == target


def test_ood_tree_has_views_2_to_5(tmp_path):
    root = write_tree(tmp_path, ood=True)
    world = IEBench(root=str(root), image_size=16, ood=True)
    ids, lat = world.object_views(0)
    assert ids.tolist() == [2, 3, 4, 5] and (lat[:, :3].abs() > np.pi / 2).all()
    g = torch.Generator().manual_seed(0)
    state = world.reset(4, g)
    assert set(state["view"].tolist()) <= {2, 3, 4, 5}
    state = world.step(state, world.sample_action(state, g), g)
    assert world.render(state).shape == (4, 3, 16, 16)


def test_root_is_required(monkeypatch):
    monkeypatch.delenv("SEQJEPA_3DIEBENCH", raising=False)
    with pytest.raises(ValueError, match="world.options.root"):
        envs.make_world("seqjepa/3DIEBench-v0")
    with pytest.raises(ValueError, match="world.options.root"):
        IEBench(root="/nonexistent/3diebench")


def test_root_from_the_environment(tree, monkeypatch):
    monkeypatch.setenv("SEQJEPA_3DIEBENCH", str(tree))
    assert IEBench(image_size=16).options.root == str(tree)


def test_missing_and_corrupt_files_are_named(tmp_path):
    root = write_tree(tmp_path)
    obj = root / "02691156" / "02691156obj0"
    world = IEBench(root=str(root), image_size=16, cache_images=0)
    g = torch.Generator().manual_seed(0)
    state = world.reset(1, g, torch.tensor([0]))
    view = int(state["view"])

    (obj / f"image_{view}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=f"image_{view}.jpg"):
        world.render(state)
    (obj / f"image_{view}.jpg").unlink()
    with pytest.raises(ValueError, match=f"missing file .*image_{view}.jpg"):
        world.render(state)

    other = (view + 1) % 4  # a view whose image is still there
    np.save(obj / f"latent_{other}.npy", np.zeros(5))
    with pytest.raises(ValueError, match=f"latent_{other}.npy.*shape"):
        IEBench(root=str(root), image_size=16).object_views(0)
    (obj / f"latent_{other}.npy").unlink()
    with pytest.raises(ValueError, match=f"missing file .*latent_{other}.npy"):
        IEBench(root=str(root), image_size=16).object_views(0)

    (root / "val_labels.npy").unlink()
    with pytest.raises(ValueError, match="val_labels.npy"):
        IEBench(root=str(root), split="test")


def test_data_fingerprint_follows_the_files_the_world_reads(tmp_path):
    root = write_tree(tmp_path, views=4)
    fingerprint = lambda **o: IEBench(root=str(root), image_size=16, **o).data_fingerprint()  # noqa: E731
    first, three_views = fingerprint(), fingerprint(views=3)
    assert fingerprint() == first and three_views != first
    obj = root / "02691156" / "02691156obj0"
    np.save(obj / "latent_3.npy", np.zeros(7))
    os.utime(obj / "latent_3.npy", ns=(0, 10**18))  # a later write, whatever the file system's clock resolution
    changed = fingerprint()
    assert changed != first and fingerprint(views=3) == three_views  # view 3 is not read with views=3
    (obj / "notes.txt").write_text("not a view")
    assert fingerprint() == changed  # nor are other files
    (root / "val_labels.npy").write_bytes((root / "val_labels.npy").read_bytes())
    os.utime(root / "val_labels.npy", ns=(0, 10**18))
    assert fingerprint() != changed  # the index files count too (the other split's labels give num_classes)
    shutil.rmtree(obj)
    assert fingerprint() != changed  # a missing object is counted; rendering names it


def test_pickled_index_needs_a_text_index(tmp_path):
    root = write_tree(tmp_path)
    paths = [str(p) for p in np.load(root / "train_images.npy")]
    np.save(root / "train_images.npy", np.array(paths, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="train_images.npy.*pickle.*train_images.txt"):
        IEBench(root=str(root))
    (root / "train_images.txt").write_text("\n".join(paths))
    assert IEBench(root=str(root), image_size=16).num_episodes == 2


def test_official_normalisation_reaches_the_model(tree):
    from seqjepa.config import preset
    from seqjepa.train import build_model

    world = IEBench(root=str(tree), image_size=16)
    mean, std = (0.5016, 0.5037, 0.5060), (0.1030, 0.0999, 0.0969)  # official main_transformed_views.py
    assert (world.pixel_mean, world.pixel_std) == (mean, std)
    cfg = preset("smoke")
    for method in ("seqjepa", "vicreg"):
        cfg.model.method = method
        model = build_model(cfg, world)
        assert model.hparams["mean"] == pytest.approx(mean) and model.hparams["std"] == pytest.approx(std)
        views = torch.full((1, 1, 3, 4, 4), 128, dtype=torch.uint8)
        expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
        torch.testing.assert_close(model.prepare(views)[0, :, 0, 0], expected)
    cfg.model.method = "seqjepa"
    assert build_model(cfg, world).action_bn == "3diebench"
