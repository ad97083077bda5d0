"""run.py preview: an MP4 of a random-policy episode and a GIF in TensorBoard."""
import run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_preview_writes_mp4_and_tensorboard_gif(tmp_path):
    out = tmp_path / "pv" / "episode.mp4"
    assert run.main(["preview", "--env", "seqjepa/Saccades-v0", "--steps", "3", "--out", str(out),
                     "--set", "world.options.scene_size=48", "--set", "world.options.image_size=16",
                     "--set", "world.options.per_class=2"]) == 0
    assert out.is_file() and out.stat().st_size > 0
    acc = EventAccumulator(str(out.parent), size_guidance={"images": 0})
    acc.Reload()
    assert "preview/Saccades-v0" in acc.Tags()["images"]
    image = acc.Images("preview/Saccades-v0")[0]
    assert image.encoded_image_string[:6] in (b"GIF89a", b"GIF87a")


def test_preview_bad_env_is_one_line_exit_2(capsys):
    assert run.main(["preview", "--env", "seqjepa/NoSuchWorld-v0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown world" in err and "\n" not in err
