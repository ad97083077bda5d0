"""The saccade world: glimpse geometry, IoR, fixation sampling, determinism, STL-10 readers, saliency."""
import numpy as np
import pytest
import torch
from PIL import Image

from envs.augment import Augmentations
from envs.saccades import Saccades
from envs.saliency import classical_saliency, inhibit, sample_fixations
from envs.scenes import cluttered_scenes
from envs.stl10 import IMAGE_BYTES, class_names, load_saliency_maps, load_stl10
from seqjepa.options import ConfigError

SMALL = dict(num_classes=3, per_class=2, scene_size=64, image_size=16)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def at(world, episodes, rc):
    """A state fixating pixel(s) ``rc`` [n, 2] of ``episodes``."""
    s = world.options.scene_size
    params = torch.as_tensor(rc, dtype=torch.float32) / s
    state = world.reset(len(params), gen(), torch.as_tensor(episodes))
    return {**state, "params": params}


def test_glimpse_is_centred_on_the_fixation_not_its_transpose():
    world = Saccades(**{**SMALL, "scene_size": 96, "image_size": 32})
    dots = [(20, 70), (70, 20), (2, 93)]  # asymmetric, so a transposed crop misses; the last one at a corner
    images = torch.zeros(3, 3, 96, 96, dtype=torch.uint8)
    for i, (r, c) in enumerate(dots):
        images[i, :, r, c] = torch.tensor([255, 128, 7], dtype=torch.uint8)
    world.images = images
    views = world.render(at(world, [0, 1, 2], dots))
    for i in range(3):
        peak = divmod(int(views[i, 0].flatten().argmax()), 32)
        assert peak == (16, 16), f"dot {dots[i]} seen at glimpse pixel {peak}"
        assert views[i, :, 16, 16].tolist() == [255, 128, 7] and int(views[i].sum()) == 255 + 128 + 7
    # An integer fixation gives an exact copy of the scene; outside the scene is black.
    world.images = torch.randint(0, 256, (1, 3, 96, 96), dtype=torch.uint8, generator=gen(1))
    view = world.render(at(world, [0], [(40, 57)]))[0]
    assert torch.equal(view, world.images[0, :, 24:56, 41:73])
    corner = world.render(at(world, [0], [(0, 95)]))[0]
    assert torch.equal(corner[:, 16:, :17], world.images[0, :, :16, 79:]) and corner[:, :16].sum() == 0
    assert corner[:, :, 17:].sum() == 0


def test_ior_circle_and_square():
    zeros = torch.zeros(1, 96, 96, dtype=torch.bool)
    r, c = torch.tensor([48]), torch.tensor([40])
    circle, square = inhibit(zeros, r, c, 16, "circle")[0], inhibit(zeros, r, c, 16, "square")[0]
    assert int(square.sum()) == 33 * 33 and circle.sum() < square.sum() and not (circle & ~square).any()
    assert 780 < int(circle.sum()) < 830                       # ~ pi * 16^2
    assert circle[64, 40] and circle[48, 56] and not circle[65, 40] and not circle[64, 56]
    assert square[64, 56] and square[32, 24] and not square[65, 40] and not square[48, 57]
    assert torch.equal(inhibit(zeros, r, c, 16, "none"), zeros)
    again = inhibit(inhibit(zeros, r, c, 16), torch.tensor([10]), torch.tensor([80]), 16)[0]
    assert again[48, 40] and again[10, 80] and not again[80, 10]   # marks accumulate; rows and cols not swapped


@pytest.mark.parametrize("ior", ["circle", "square"])
@pytest.mark.parametrize("fixations", ["saliency", "uniform"])
def test_fixations_never_land_in_inhibited_regions(ior, fixations):
    world = Saccades(**SMALL, ior=ior, ior_radius=6, fixations=fixations)
    g, s = gen(3), world.options.scene_size
    state = world.reset(64, g)
    for _ in range(10):
        action = world.sample_action(state, g)
        target = ((state["params"] + action) * s).round().long()
        assert not state["inhibition"][torch.arange(64), target[:, 0], target[:, 1]].any()
        state = world.step(state, action, g)
        assert state["inhibition"][torch.arange(64), target[:, 0], target[:, 1]].all()
    assert (state["path"] >= 0).all(-1).sum(1).eq(11).all()


@pytest.mark.parametrize("fixations", ["saliency", "uniform"])
def test_inside_keeps_every_glimpse_off_the_padding_even_when_ior_covers_the_region(fixations):
    world = Saccades(**SMALL, fixations=fixations, inside=True, ior_radius=12)  # 16-px glimpses of 64-px scenes
    g = gen(4)
    state = world.reset(64, g)
    for _ in range(40):                                        # IoR exhausts the 49 x 49 region early on
        assert (world.render(state).float().amax(1) > 0).float().mean() > 0.999  # no black padding
        pix = state["params"] * 64
        assert ((pix >= 8) & (pix <= 56)).all()
        state = world.step(state, world.sample_action(state, g), g)
    free = Saccades(**SMALL, fixations=fixations)
    pix = torch.cat([free.reset(256, gen(s))["params"] for s in range(4)]) * 64
    assert ((pix < 8) | (pix > 56)).any()                      # without it, glimpses do cross the edge


def test_sampling_fallbacks_and_saliency_weighting():
    sal = torch.zeros(2, 8, 8)
    sal[:, 1, 2] = 1.0                                          # one salient pixel
    inh = torch.zeros(2, 8, 8, dtype=torch.bool)
    inh[1, 1, 2] = True                                         # ...inhibited in map 1: uniform over the rest
    rows, cols = [], []
    for seed in range(40):
        r, c = sample_fixations(sal, inh, gen(seed))
        rows.append(r), cols.append(c)
    r, c = torch.stack(rows), torch.stack(cols)
    assert (r[:, 0] == 1).all() and (c[:, 0] == 2).all()
    assert not ((r[:, 1] == 1) & (c[:, 1] == 2)).any() and len(set((r[:, 1] * 8 + c[:, 1]).tolist())) > 20
    r, c = sample_fixations(sal, torch.ones(2, 8, 8, dtype=torch.bool), gen())  # all inhibited: saliency alone
    assert r.tolist() == [1, 1] and c.tolist() == [2, 2]


def test_uniform_fixations_cover_the_scene_and_ior_none_allows_revisits():
    world = Saccades(**SMALL, fixations="uniform")
    state = world.reset(2000, gen(), torch.zeros(2000, dtype=torch.long))
    pix = state["params"] * 64
    assert abs(pix.mean().item() - 31.5) < 1.5 and abs(pix.std().item() - 18.5) < 1.0
    only = torch.ones(2000, 64, 64, dtype=torch.bool)
    only[:, 5, 9] = False                                       # everything inhibited but one pixel
    a = world.sample_action({**state, "inhibition": only}, gen())
    assert torch.allclose((state["params"] + a) * 64, torch.tensor([5.0, 9.0]).expand(2000, 2), atol=1e-3)
    free = Saccades(**SMALL, fixations="uniform", ior="none")
    a = free.sample_action({**state, "inhibition": only}, gen())
    assert ((state["params"] + a) * 64).round().unique(dim=0).shape[0] > 1000


def test_same_seed_same_episodes_and_scenes():
    def rollout(world, seed):
        g = gen(seed)
        state = world.reset(8, g)
        views = [world.render(state)]
        for _ in range(3):
            state = world.step(state, world.sample_action(state, g), g)
            views.append(world.render(state))
        return torch.stack(views), state["params"]

    a, b = Saccades(**SMALL), Saccades(**SMALL)
    va, pa = rollout(a, 5)
    vb, pb = rollout(b, 5)
    vc, _ = rollout(a, 6)
    assert torch.equal(va, vb) and torch.equal(pa, pb) and not torch.equal(va, vc)
    train, labels = cluttered_scenes(3, 2, 32, seed=0, split="train")
    test, _ = cluttered_scenes(3, 2, 32, seed=0, split="test")
    from envs.scenes import _scenes
    fresh = _scenes.__wrapped__(3, 2, 32, 0, "train", False)[0]  # bypass the cache: drawing is deterministic
    assert torch.equal(train, fresh) and not torch.equal(train, test) and labels.tolist() == [0, 1, 2] * 2


def test_class_colours_give_each_class_its_hue_and_change_nothing_else():
    from envs.scenes import _colours
    plain, labels = cluttered_scenes(4, 6, 48, seed=0, split="train")
    tinted, same = cluttered_scenes(4, 6, 48, seed=0, split="train", class_colours=True)
    assert torch.equal(labels, same)
    changed = (plain != tinted).any(1)                      # [N, H, W]: pixels of the class object's colours
    assert 0.02 < changed.float().mean() < 0.4              # the objects, not the scenes, changed
    # Each class's light colour keeps the class hue within 0.04 turn; the dark one is another hue.
    hue = torch.arange(8) % 4 / 4
    light, dark = _colours(8, torch.Generator().manual_seed(0), hue)
    assert (((rgb_hue(light) - hue + 0.5) % 1 - 0.5).abs() <= 0.04 + 1e-4).all()
    assert (((rgb_hue(dark) - hue + 0.5) % 1 - 0.5).abs() >= 0.2).all()


def rgb_hue(rgb):
    """Hue in turns of RGB rows [n, 3]."""
    r, g, b = rgb.unbind(1)
    mx, mn = rgb.amax(1), rgb.amin(1)
    d = (mx - mn).clamp(min=1e-9)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6 % 1


def test_relative_and_step_agree():
    world = Saccades(**SMALL)
    g = gen(2)
    state = world.reset(16, g)
    target = torch.randint(0, 64, (16, 2), generator=g).float() / 64
    moved = world.step(state, world.relative(state["params"], target), g)
    assert torch.allclose(moved["params"], target, atol=1e-6)
    action = world.sample_action(moved, g)
    after = world.step(moved, action, g)
    assert torch.allclose(world.relative(moved["params"], after["params"]), action, atol=1e-6)
    assert after["params"].min() >= 0 and after["params"].max() <= 63 / 64
    pushed = world.step(state, torch.tensor([[1.0, -1.0]]).expand(16, 2), g)
    assert (pushed["params"][:, 0] == 63 / 64).all() and (pushed["params"][:, 1] == 0).all()
    assert world.relative(state["params"], pushed["params"]).abs().max() <= 1
    with pytest.raises(ValueError, match="action: got shape"):
        world.step(state, torch.zeros(16, 3), g)


def test_render_frame_shows_the_scene_and_the_path():
    world = Saccades(**SMALL)
    g = gen(4)
    state = world.reset(2, g)
    for _ in range(3):
        state = world.step(state, world.sample_action(state, g), g)
    frame = world.render_frame(state)
    assert frame.shape == (2, 3, 64, 64) and frame.dtype == torch.uint8
    r, c = (state["params"][0] * 64).round().long().tolist()
    assert frame[0, :, r, c].tolist() == [40, 255, 40]           # the current fixation is marked
    assert (frame != world.images[state["episode"]]).any(1).float().mean() < 0.3  # mostly the scene


def test_options_are_validated():
    with pytest.raises(ConfigError, match="image_size"):
        Saccades(**{**SMALL, "image_size": 65})
    with pytest.raises(ConfigError, match="root"):
        Saccades(source="stl10")
    with pytest.raises(ConfigError, match="ior"):
        Saccades(**SMALL, ior="diamond")


def write_stl10(root, n=3, unlabeled=2):
    """Tiny STL-10 files in the real binary format: channels stored column-major."""
    images = np.zeros((n, 3, 96, 96), np.uint8)                 # [n, c, row, col]
    images[1, 2, 10, 70] = 200
    images[0, 0, 95, 0] = 17
    (root / "train_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
    (root / "train_y.bin").write_bytes(bytes([1, 10, 5][:n]))
    (root / "unlabeled_X.bin").write_bytes(np.full((unlabeled, 3, 96, 96), 9, np.uint8).tobytes())
    (root / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    return images


def test_stl10_reader(tmp_path):
    write_stl10(tmp_path)
    images, labels = load_stl10(tmp_path, "train")
    assert images.shape == (3, 3, 96, 96) and images.dtype == torch.uint8
    assert images[1, 2, 10, 70] == 200 and images[1, 2, 70, 10] == 0 and images[0, 0, 95, 0] == 17
    assert int(images.sum()) == 217 and labels.tolist() == [0, 9, 4]
    images, labels = load_stl10(tmp_path, "unlabeled")
    assert images.shape == (2, 3, 96, 96) and labels.tolist() == [-1, -1]
    assert class_names(tmp_path)[3] == "c3" and load_stl10(tmp_path, "train", limit=2)[0].shape[0] == 2


def test_stl10_errors_name_the_file(tmp_path):
    write_stl10(tmp_path)
    (tmp_path / "test_X.bin").write_bytes(b"\0" * (IMAGE_BYTES * 2 + 5))
    with pytest.raises(ValueError, match=r"test_X\.bin.*27648"):
        load_stl10(tmp_path, "test")
    (tmp_path / "test_X.bin").write_bytes(b"\0" * IMAGE_BYTES)
    with pytest.raises(ValueError, match=r"STL-10: .*test_y\.bin not found"):
        load_stl10(tmp_path, "test")
    (tmp_path / "test_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ValueError, match="2 labels.*1 images"):
        load_stl10(tmp_path, "test")
    (tmp_path / "test_y.bin").write_bytes(bytes([0]))
    with pytest.raises(ValueError, match=r"test_y\.bin.*label 0"):
        load_stl10(tmp_path, "test")


def test_saliency_maps_from_npy_drive_the_fixations(tmp_path):
    write_stl10(tmp_path)
    maps = np.zeros((3, 1, 96, 96), np.float32)
    maps[:, 0, 30, 80] = 1.0                                    # every map puts all its mass on one pixel
    np.save(tmp_path / "saliency_train.npy", maps)
    world = Saccades(source="stl10", root=str(tmp_path), saliency_maps=str(tmp_path / "saliency_{split}.npy"),
                     scene_size=96, image_size=32)
    state = world.reset(16, gen())
    assert (state["params"] * 96 == torch.tensor([30.0, 80.0])).all() and world.num_classes == 10
    assert world.labels.tolist() == [0, 9, 4]
    small = Saccades(source="stl10", root=str(tmp_path), scene_size=48, image_size=16, fixations="uniform")
    assert small.images.shape == (3, 3, 48, 48) and small.render(small.reset(2, gen())).shape == (2, 3, 16, 16)
    np.save(tmp_path / "bad.npy", maps[:2])
    with pytest.raises(ValueError, match=r"bad\.npy holds 2 maps for 3 images"):
        Saccades(source="stl10", root=str(tmp_path), saliency_maps=str(tmp_path / "bad.npy"))
    np.save(tmp_path / "flat.npy", maps[:, 0, 0])
    with pytest.raises(ValueError, match=r"flat\.npy has shape \(3, 96\)"):
        load_saliency_maps(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npy"):
        load_saliency_maps(tmp_path / "obj.npy")


@pytest.mark.parametrize("method", ["contrast", "spectral"])
def test_classical_saliency_peaks_on_a_salient_blob(method):
    g = gen(7)
    images = (110 + 12 * torch.randn(2, 3, 96, 96, generator=g)).clamp(0, 255).to(torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    for i, (r, c) in enumerate([(70, 25), (15, 60)]):
        blob = (yy - r) ** 2 + (xx - c) ** 2 <= 36
        images[i, 0][blob], images[i, 1][blob], images[i, 2][blob] = 250, 30, 30
    sal = classical_saliency(images, method)
    assert sal.shape == (2, 96, 96) and torch.allclose(sal.sum((1, 2)), torch.ones(2)) and (sal > 0).all()
    for i, (r, c) in enumerate([(70, 25), (15, 60)]):
        pr, pc = divmod(int(sal[i].argmax()), 96)
        assert (pr - r) ** 2 + (pc - c) ** 2 <= 8 ** 2, f"{method}: peak at {(pr, pc)}, blob at {(r, c)}"


def test_folder_source(tmp_path):
    for split in ("train", "test"):
        for k, name in enumerate(("cat", "dog")):
            (tmp_path / split / name).mkdir(parents=True)
            for j in range(2):
                Image.fromarray(np.full((40, 50, 3), 60 * k + j, np.uint8)).save(tmp_path / split / name / f"{j}.png")
    world = Saccades(source="folder", root=str(tmp_path), split="test", scene_size=32, image_size=8)
    assert world.num_classes == 2 and world.num_episodes == 4 and world.images.shape == (4, 3, 32, 32)
    assert world.render(world.reset(3, gen())).shape == (3, 3, 8, 8)


def test_folder_sources_share_one_split_rule(tmp_path):
    """Augmentations and Saccades split a folder alike (envs.images.load_folder_split): without split folders,
    every 5th image of each class is the test split, and a missing split folder is refused by both."""
    flat = tmp_path / "flat"
    for k, name in enumerate(("cat", "dog")):
        (flat / name).mkdir(parents=True)
        for j in range(6):  # every image its own grey, so the splits can be told apart
            Image.fromarray(np.full((32, 32, 3), 40 * k + 5 * j, np.uint8)).save(flat / name / f"{j}.png")
    seen = {}
    for split in ("train", "test"):
        aug = Augmentations(source="folder", root=str(flat), image_size=32, split=split)
        sac = Saccades(source="folder", root=str(flat), scene_size=32, image_size=8, fixations="uniform", split=split)
        assert torch.equal(aug._images, sac.images) and torch.equal(aug._labels, sac.labels)
        seen[split] = {int(v) for v in sac.images[:, 0, 0, 0]}
    assert seen["test"] == {20, 60} and seen["train"] == {0, 5, 10, 15, 25, 40, 45, 50, 55, 65}  # image 4 of each
    with pytest.raises(ValueError, match="no unlabeled split"):
        Saccades(source="folder", root=str(flat), split="unlabeled")

    only_train = tmp_path / "only_train"
    (only_train / "train" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(only_train / "train" / "cat" / "0.png")
    refusals = set()
    for world in (Augmentations, Saccades):
        with pytest.raises(ValueError, match=r"no test split under \S+only_train: it has the split folders \['train'\]"
                           ) as e:
            world(source="folder", root=str(only_train), split="test")
        refusals.add(str(e.value))
    assert len(refusals) == 1  # word for word


def test_clean_views_fixate_the_class_object():
    from envs.scenes import class_object_places
    plain, _ = cluttered_scenes(4, 6, 48, seed=0, split="train")
    tinted, _ = cluttered_scenes(4, 6, 48, seed=0, split="train", class_colours=True)
    centres, _ = class_object_places(4, 6, 48, seed=0, split="train")
    changed = (plain != tinted).any(1).float()               # [N, H, W]: the visible pixels of the class object
    rows = (torch.arange(48) + 0.5) / 48
    mass = changed.sum((1, 2))
    centroid = torch.stack([(changed.sum(2) * rows).sum(1), (changed.sum(1) * rows).sum(1)], 1) / mass[:, None]
    # Every shape is symmetric about its centre; occluders and the scene edge shift the visible part a little.
    assert ((centroid - centres).norm(dim=1) < 0.08).float().mean() >= 0.9
    w = Saccades(num_classes=4, per_class=6, scene_size=48, image_size=16)
    episodes = torch.tensor([0, 5, 23])
    clean = w.clean_views(episodes)
    pix = (centres[episodes] * 48).floor().long()
    assert clean.shape == (3, 3, 16, 16)
    for view, e, (r, c) in zip(clean, episodes, pix):
        assert torch.equal(view[:, 8, 8], plain[e, :, r, c])  # the fixation pixel is the object's centre pixel
    assert Saccades(num_classes=4, per_class=6, scene_size=48, image_size=16, class_colours=True
                    ).clean_views(episodes).shape == clean.shape


def test_object_saliency_fixates_the_class_object_and_only_procedural_scenes_have_it():
    w = Saccades(num_classes=4, per_class=6, scene_size=48, image_size=16, saliency="object", ior_radius=4)
    from envs.scenes import class_object_places
    centres, radii = class_object_places(4, 6, 48, seed=0, split="train")
    g = torch.Generator().manual_seed(0)
    state = w.reset(24, g, episodes=torch.arange(24))
    far = []
    for _ in range(4):                                      # IoR spreads the fixations; they stay on the object
        far.append((state["params"] + 0.5 / 48 - centres).norm(dim=1) / radii)
        state = w.step(state, w.sample_action(state, g), g)
    assert torch.stack(far).median() < 1.0
    with pytest.raises(ConfigError, match="saliency: got 'object' with source='stl10'"):
        Saccades(source="stl10", root="/nowhere", saliency="object")
