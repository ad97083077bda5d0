"""Bad input: every bad command line, setting, file or checkpoint gets one clear line and exit 2.

The corpus runs each case through ``run.main`` in this process: exit code 2, one line on stderr, naming the field
or file. ``python -m pytest tests/test_bad_input.py -q -rA`` lists each case's outcome. What a kill or a divergence
leaves is tests/test_crash_recovery.py.
"""
import os
import random
import shutil

import pytest
import torch

import run
from seqjepa import checkpoint
from seqjepa.config import preset
from seqjepa.options import apply_overrides
from seqjepa.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

quiet = lambda msg: None  # noqa: E731


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 2-step smoke run (latest.pt, previous.pt, config.json) and its cache, trained once."""
    root = tmp_path_factory.mktemp("base")
    cfg = preset("smoke")
    apply_overrides(cfg, [f"train.runs_dir={root / 'runs'}", f"world.cache_dir={root / 'cache'}",
                          "train.progress=off", "train.steps=2", "train.ckpt_every=1", "train.log_every=1"])
    train(cfg, root / "runs" / "base", log=quiet)
    return root


# -- files the cases need, made in each case's own folder ------------------------------------------------------------

def the_run(tmp, base):
    dst = tmp / "run"
    if not dst.exists():
        shutil.copytree(base / "runs" / "base", dst)
    return dst


def ckpt_with(tmp, base, edit, name="edited.pt"):
    state = checkpoint.load(the_run(tmp, base) / "latest.pt")
    edit(state)
    torch.save(state, tmp / name)
    return tmp / name


def write(tmp, name, data: bytes):
    (tmp / name).write_bytes(data)
    return tmp / name


def run_config_with(tmp, base, edit):
    r = the_run(tmp, base)
    text = (r / "config.json").read_text()
    (r / "config.json").write_text(edit(text))
    return r


def evil_payload():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    return Evil()


def set_in(state, dotted, value):
    d = state
    *path, last = dotted.split(".")
    for p in path:
        d = d[p]
    d[last] = value


def read_only_dir(tmp):
    d = tmp / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


# -- the corpus ------------------------------------------------------------------------------------------------------
# (id, argv with {tmp}, {run}, {file}, fragment stderr must hold, setup(tmp, base) -> {"file": ...} or None)

SMOKE = ["--preset", "smoke"]


def T(*args):  # a train command writing under the case's folder
    return ["train", *args, "--set", "train.runs_dir={tmp}/runs", "--set", "world.cache_dir={tmp}/cache"]


CASES = [
    # settings: type, range, unknown keys
    ("depth-12", T("--set", "model.depth=12"), "model.depth: got 12", None),
    ("unknown-key", T("--set", "train.stepz=3"), "train.stepz: unknown key", None),
    ("unknown-section", T("--set", "nope.depth=1"), "nope: unknown key", None),
    ("section-as-value", T("--set", "model=3"), "model: is a section", None),
    ("no-equals", T("--set", "model.depth"), "expected section.key=value", None),
    ("lr-text", T("--set", "optim.lr=fast"), "optim.lr: got 'fast'", None),
    ("lr-inf", T("--set", "optim.lr=inf"), "optim.lr: got inf", None),
    ("lr-minus-inf", T("--set", "optim.lr=-inf"), "optim.lr: got -inf", None),
    ("lr-json-infinity", T("--set", "optim.lr=Infinity"), "optim.lr: got inf", None),
    ("lr-nan", T("--set", "optim.lr=nan"), "optim.lr: got nan", None),
    ("lr-absurd", T("--set", "optim.lr=1e30"), "optim.lr: got 1e+30; allowed: finite float > 0.0 <= 10.0", None),
    ("lr-zero", T("--set", "optim.lr=0"), "optim.lr: got 0", None),
    ("wd-inf", T("--set", "optim.weight_decay=inf"), "optim.weight_decay: got inf", None),
    ("wd-absurd", T("--set", "optim.weight_decay=1e30"), "optim.weight_decay: got 1e+30", None),
    ("start-lr-inf", T("--set", "optim.start_lr=inf"), "optim.start_lr: got inf", None),
    ("final-lr-nan", T("--set", "optim.final_lr=nan"), "optim.final_lr: got nan", None),
    ("probe-lr-inf", T("--set", "optim.probe_lr=inf"), "optim.probe_lr: got inf", None),
    ("beta-inf", T("--set", "optim.beta1=inf"), "optim.beta1: got inf", None),
    ("dropout-inf", T("--set", "model.dropout=inf"), "model.dropout: got inf", None),
    ("tau-nan", T("--set", "model.tau_base=nan"), "model.tau_base: got nan", None),
    ("eval-lr-inf", T("--set", "eval.lr=inf"), "eval.lr: got inf", None),
    ("val-fraction-nan", T("--set", "eval.val_fraction=nan"), "eval.val_fraction: got nan", None),
    ("seed-2-64", T("--set", "train.seed=18446744073709551616"), "train.seed: got 18446744073709551616; allowed: "
     "int >= 0 <= 4294967295", None),
    ("seed-negative", T("--set", "train.seed=-1"), "train.seed: got -1", None),
    ("eval-seed-huge", T("--set", "eval.seed=1180591620717411303424"), "eval.seed: got", None),
    ("m-val-empty", T("--set", "eval.m_val=[]"), "eval.m_val: got []", None),
    ("m-val-zero", T("--set", "eval.m_val=[0,1]"), "eval.m_val: got [0, 1]", None),
    ("suites-empty", T("--set", "eval.suites=[]"), "eval.suites: got []", None),
    ("suites-unknown", T("--set", "eval.suites=[linear_probe,nope]"), "eval.suites: unknown suite 'nope'; allowed: "
     "all, linear_probe", None),
    ("steps-zero", T("--set", "train.steps=0"), "train.steps: got 0", None),
    ("steps-float", T("--set", "train.steps=1.5"), "train.steps: got 1.5", None),
    ("batch-1", T("--set", "train.batch_size=1"), "train.batch_size: got 1", None),
    ("width-2", T("--set", "model.width=2"), "model.width: got 2", None),
    ("width-huge", T("--set", "model.width=1000000"), "model.width: got 1000000", None),
    ("ema-maybe", T("--set", "model.ema=maybe"), "model.ema: got 'maybe'", None),
    ("method-unknown", T("--set", "model.method=nope"), "model.method: unknown method 'nope'; allowed: seqjepa, "
     "simclr", None),
    ("method-flag-unknown", T("--method", "nope"), "model.method: unknown method 'nope'", None),
    ("method-option-unknown", T(*SMOKE, "--method", "byol", "--set", "model.method_options.nope=1"),
     "nope", None),
    ("preset-unknown", T("--preset", "huge"), "--preset: got 'huge'", None),
    ("env-unknown", T("--env", "seqjepa/Nope-v0"), "world.env: unknown world", None),
    ("env-module", T("--env", "no_such_module:X-v0"), "cannot import plug-in module", None),
    ("device-tpu", T("--set", "train.device=tpu"), "train.device: got 'tpu'", None),
    ("bank-views-1", T("--set", "world.bank_views=1"), "world.bank_views: got 1", None),
    ("source-unknown", T("--set", "world.source=disk"), "world.source: got 'disk'", None),
    # world options and agents (named as the user set them)
    ("option-range", T(*SMOKE, "--set", "world.options.image_size=3"), "world.options.image_size: got 3", None),
    ("option-unknown", T(*SMOKE, "--set", "world.options.colour=1"), "world.options.colour: unknown key; allowed "
     "keys: actions, canonical_quat, data_seed, image_size", None),
    ("option-old-and-new", T(*SMOKE, "--set", "world.options.num_categories=3"), "world.options.num_categories: got "
     "3 with num_classes=4; allowed: one of them", None),
    ("option-inf", T(*SMOKE, "--env", "seqjepa/Saccades-v0", "--set", "world.options.ior_radius=inf"),
     "world.options.ior_radius: got inf", None),
    ("augment-no-root", T(*SMOKE, "--env", "seqjepa/Augmentations-v0", "--set", "world.options.source=cifar100"),
     "world.options.root", None),
    ("agent-unknown", T(*SMOKE, "--agent", "nope"), "world.agent: unknown agent 'nope'", None),
    # run folders: names, runs_dir, existing runs
    ("name-dotdot", T("--set", "train.name=../x"), "train.name: got '../x'", None),
    ("name-absolute", T("--set", "train.name=/tmp/seqjepa-abs"), "train.name: got '/tmp/seqjepa-abs'", None),
    ("name-inner-dotdot", T("--set", "train.name=a/../../x"), "train.name: got 'a/../../x'", None),
    ("runs-dir-file", ["train", *SMOKE, "--set", "train.runs_dir={file}"], "train.runs_dir: got",
     lambda tmp, base: {"file": write(tmp, "plain", b"x")}),
    ("runs-dir-under-file", ["train", *SMOKE, "--set", "train.runs_dir={file}/runs"], "is a file",
     lambda tmp, base: {"file": write(tmp, "plain", b"x")}),
    ("runs-dir-unwritable", ["train", *SMOKE, "--set", "train.runs_dir=/proc/seqjepa-runs"],
     "train.runs_dir: got '/proc/seqjepa-runs'", None),
    ("name-taken", ["train", *SMOKE, "--set", "train.runs_dir={run}/..", "--set", "train.name=run"],
     "already holds a checkpoint; use --resume", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("cache-dir-file", ["train", *SMOKE, "--set", "train.runs_dir={tmp}/runs", "--set", "world.cache_dir={file}",
                        "--set", "train.eval_after=false"], "{file}",
     lambda tmp, base: {"file": write(tmp, "plain", b"x")}),
    # --resume: folders, damaged files, changes of network or world
    ("resume-missing", ["train", "--resume", "{tmp}/nope"], "--resume: got", None),
    ("resume-no-config", ["train", "--resume", "{tmp}"], "has no config.json", None),
    ("resume-config-empty", ["train", "--resume", "{run}"], "config.json is empty",
     lambda tmp, base: {"run": run_config_with(tmp, base, lambda t: "")}),
    ("resume-config-garbled", ["train", "--resume", "{run}"], "config.json is not valid JSON",
     lambda tmp, base: {"run": run_config_with(tmp, base, lambda t: t[: len(t) // 2])}),
    ("resume-config-list", ["train", "--resume", "{run}"], "config.json holds a list",
     lambda tmp, base: {"run": run_config_with(tmp, base, lambda t: "[1, 2]")}),
    ("resume-config-binary", ["train", "--resume", "{run}"], "config.json is not text",
     lambda tmp, base: {"run": _replace(the_run(tmp, base), "config.json", b"\xff\xfe\x00garbage")}),
    ("resume-config-bad-value", ["train", "--resume", "{run}"], "config.json: model.depth: got 12",
     lambda tmp, base: {"run": run_config_with(tmp, base, lambda t: t.replace('"depth": 10', '"depth": 12'))}),
    ("resume-no-checkpoint", ["train", "--resume", "{run}"], "latest.pt does not exist",
     lambda tmp, base: {"run": _without(the_run(tmp, base), "latest.pt")}),
    ("resume-width", ["train", "--resume", "{run}", "--set", "model.width=16"],
     "--set: changes model.width to 16, but", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-method", ["train", "--resume", "{run}", "--set", "model.method=byol"],
     "changes model.method to \"byol\"", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-method-flag", ["train", "--resume", "{run}", "--method", "byol"],
     "--method: changes model.method", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-env", ["train", "--resume", "{run}", "--set", "world.env=seqjepa/Saccades-v0"],
     "changes world.env to \"seqjepa/Saccades-v0\"", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-env-flag", ["train", "--resume", "{run}", "--env", "seqjepa/Saccades-v0"],
     "--env: changes world.env", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-preset", ["train", "--resume", "{run}", "--preset", "cpu"], "--preset: changes preset to \"cpu\"",
     lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-option", ["train", "--resume", "{run}", "--set", "world.options.image_size=48"],
     "changes world.options.image_size to 48", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-agent", ["train", "--resume", "{run}", "--agent", "sweep"], "--agent: changes world.",
     lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-lr-inf", ["train", "--resume", "{run}", "--set", "optim.lr=inf"], "optim.lr: got inf",
     lambda tmp, base: {"run": the_run(tmp, base)}),
    ("resume-ckpt-empty", ["train", "--resume", "{run}"], "latest.pt",
     lambda tmp, base: {"run": _replace(the_run(tmp, base), "latest.pt", b"")}),
    ("resume-ckpt-text", ["train", "--resume", "{run}"], "latest.pt",
     lambda tmp, base: {"run": _replace(the_run(tmp, base), "latest.pt", b"not a checkpoint\n")}),
    ("resume-ckpt-random", ["train", "--resume", "{run}"], "latest.pt",
     lambda tmp, base: {"run": _replace(the_run(tmp, base), "latest.pt", random.Random(0).randbytes(4096))}),
    ("resume-ckpt-other-run", ["train", "--resume", "{run}"], "saved with model.width=16",
     lambda tmp, base: {"run": _edit_latest(tmp, base, lambda s: set_in(s, "config.model.width", 16))}),
    ("resume-ckpt-other-method", ["train", "--resume", "{run}"], "saved with model.method=\"byol\"",
     lambda tmp, base: {"run": _edit_latest(tmp, base, lambda s: set_in(s, "config.model.method", "byol"))}),
    ("resume-ckpt-other-world", ["train", "--resume", "{run}"], "saved with world.env=\"seqjepa/Saccades-v0\"",
     lambda tmp, base: {"run": _edit_latest(tmp, base, lambda s: set_in(s, "config.world.env",
                                                                         "seqjepa/Saccades-v0"))}),
    ("resume-ckpt-other-weights", ["train", "--resume", "{run}"], "does not fit this run's network",
     lambda tmp, base: {"run": _edit_latest(tmp, base, lambda s: s["model"].update(
         {k: torch.zeros(3) for k in list(s["model"])[:1]}))}),
    ("resume-ckpt-no-optimizer", ["train", "--resume", "{run}"], "no 'optimizer' entry",
     lambda tmp, base: {"run": _edit_latest(tmp, base, lambda s: s.pop("optimizer"))}),
    ("resume-ckpt-nan", ["train", "--resume", "{run}"], "holds NaN/inf",
     lambda tmp, base: {"run": _edit_latest(tmp, base, lambda s: next(v for v in s["model"].values()
                                                                          if v.is_floating_point()).fill_(
                                                                         float("nan")))}),
    # eval --ckpt: damaged or foreign checkpoints (eval/from_checkpoint.py checks them)
    ("eval-missing", ["eval", "--ckpt", "{tmp}/nope.pt"], "no such file", None),
    ("eval-directory", ["eval", "--ckpt", "{tmp}"], "{tmp}", None),
    ("eval-empty", ["eval", "--ckpt", "{file}"], "{file}", lambda tmp, base: {"file": write(tmp, "e.pt", b"")}),
    ("eval-text", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": write(tmp, "t.pt", b"hello, this is text\n")}),
    ("eval-random-bytes", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": write(tmp, "r.pt", random.Random(1).randbytes(4096))}),
    ("eval-truncated", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": write(tmp, "half.pt", (the_run(tmp, base) / "latest.pt").read_bytes()[:50000])}),
    ("eval-pickled-code", ["eval", "--ckpt", "{file}"], "refused",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s.update(payload=evil_payload()))}),
    ("eval-other-arch", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s["model_hparams"].update(width=16))}),
    ("eval-no-hparams", ["eval", "--ckpt", "{file}"], "model_hparams",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s.pop("model_hparams"))}),
    ("eval-wrong-hparams", ["eval", "--ckpt", "{file}"], "model_hparams",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s["model_hparams"].update(nope=1))}),
    ("eval-hparams-not-dict", ["eval", "--ckpt", "{file}"], "model_hparams",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s.update(model_hparams="abc"))}),
    ("eval-width-1e6", ["eval", "--ckpt", "{file}"], "width",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s["model_hparams"].update(width=10**6))}),
    ("eval-method-unknown", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s.update(method="nope"))}),
    ("eval-no-config", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: s.pop("config"))}),
    ("eval-not-seqjepa", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": _saved(tmp, {"weights": torch.zeros(3)})}),
    ("eval-plugin-in-ckpt", ["eval", "--ckpt", "{file}"], "{file}",
     lambda tmp, base: {"file": ckpt_with(tmp, base, lambda s: set_in(s, "config.world.env",
                                                                      "this:seqjepa/Nope-v0"))}),
    ("eval-suite-unknown", ["eval", "--ckpt", "{run}/latest.pt", "--suite", "nope"], "nope",
     lambda tmp, base: {"run": the_run(tmp, base)}),
    ("eval-bad-option", ["eval", "--ckpt", "{run}/latest.pt", "--set", "world.options.colour=1"],
     "world.options.colour: unknown key", lambda tmp, base: {"run": the_run(tmp, base)}),
    ("eval-m-val-empty", ["eval", "--ckpt", "{run}/latest.pt", "--set", "eval.m_val=[]"], "eval.m_val: got []",
     lambda tmp, base: {"run": the_run(tmp, base)}),
    # plan, bench, preview and argparse's own complaints
    ("plan-episodes-0", ["plan", "--ckpt", "{tmp}/x.pt", "--episodes", "0"], "--episodes: got 0", None),
    ("plan-seed-huge", ["plan", "--ckpt", "{tmp}/x.pt", "--seed", str(2**70)], "--seed: got", None),
    ("plan-missing", ["plan", "--ckpt", "{tmp}/nope.pt"], "nope.pt", None),
    ("plan-horizon-text", ["plan", "--ckpt", "x", "--horizon", "abc"], "--horizon: invalid int value", None),
    ("bench-repeats-0", ["bench", "--repeats", "0"], "--repeats: got 0", None),
    ("preview-unknown-env", ["preview", "--env", "seqjepa/Nope-v0"], "world.env: unknown world", None),
    ("preview-steps-0", ["preview", "--env", "seqjepa/RotatingObjects-v0", "--steps", "0"], "--steps", None),
    ("unknown-flag", ["train", "--bogus"], "unrecognized arguments: --bogus", None),
    ("unknown-command", ["fly"], "invalid choice: 'fly'", None),
    ("eval-no-ckpt-flag", ["eval"], "--ckpt", None),
]


def _without(run_dir, name):
    (run_dir / name).unlink()
    return run_dir


def _replace(run_dir, name, data):
    (run_dir / name).write_bytes(data)
    return run_dir


def _edit_latest(tmp, base, edit):
    r = the_run(tmp, base)
    state = checkpoint.load(r / "latest.pt")
    edit(state)
    torch.save(state, r / "latest.pt")
    return r


def _saved(tmp, obj):
    torch.save(obj, tmp / "foreign.pt")
    return tmp / "foreign.pt"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(case, base, tmp_path, monkeypatch, capsys):
    name, argv, fragment, setup = case
    monkeypatch.chdir(tmp_path)  # a default runs/ or cache lands in the case's folder
    monkeypatch.setenv("HOME", str(tmp_path))
    values = {"tmp": str(tmp_path)}
    if setup:
        values.update({k: str(v) for k, v in setup(tmp_path, base).items()})
    argv = [a.format(**values) for a in argv]
    capsys.readouterr()
    rc = run.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert fragment.format(**values) in lines[0], lines[0]


def test_a_ro_runs_dir_is_named(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; the /proc case of the corpus covers it")
    ro = read_only_dir(tmp_path)
    assert run.main(["train", *SMOKE, "--set", f"train.runs_dir={ro}/runs"]) == 2
    err = capsys.readouterr().err
    assert "train.runs_dir" in err and len(err.strip().splitlines()) == 1


def test_an_internal_bug_keeps_its_traceback(monkeypatch):
    """Only the project's own errors become one line: a ValueError from a library is a bug and propagates."""
    def broken(*a, **k):
        return int("not a number")  # a builtin raises: not a message written for the user

    monkeypatch.setattr(run, "preset", broken)
    with pytest.raises(ValueError, match="invalid literal"):
        run.main(["train", "--set", "train.steps=2"])


def test_help_shows_the_values_the_preset_uses(capsys):
    for argv, want in ((["train", "--help"], ['preset = "cpu"', "model.width = 8", "optim.lr = 0.002",
                                              "train.batch_size = 32", "eval.linear_epochs = 40"]),
                       (["train", "--preset", "smoke", "--help"], ['preset = "smoke"', "train.steps = 6",
                                                                   "optim.lr = 0.001", "train.batch_size = 8"])):
        with pytest.raises(SystemExit) as e:
            run.main(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        for fragment in want:
            assert fragment in out, fragment
