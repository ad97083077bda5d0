"""The paper's findings, reproduced small: train seq-JEPA at CPU scale, evaluate with every suite, write the table.

    python benchmarks/paper_findings.py                          # ≈ 20 min on a shared 2-core CPU (1 thread)
    python benchmarks/paper_findings.py --steps 40 --quick       # a few minutes: checks the script, not the model

Runs (same network, optimiser and budget; only the named setting changes):

* rotating objects, action-conditioned, M_tr = 3 and M_tr = 1;
* rotating objects, no action conditioning (``model.act_cond=none``), M_tr = 3 and M_tr = 1;
* saccades (``seqjepa/Saccades-v0``, procedural scenes, live saliency + IoR policy), action-conditioned, M_tr = 4,
  for path integration (included when the world is registered).

Each checkpoint is evaluated by ``eval.from_checkpoint.evaluate_checkpoint`` (all suites; equivalent to
``run.py eval --ckpt RUN/latest.pt``), and the results go to ``docs/findings.md`` with this exact command, the
settings, the wall time of every run and the paper's numbers beside ours. What the paper shows (§4): z_agg top-1
rises with M_val; without actions the rotation R² collapses while top-1 holds; saccade path integration stays high
with actions and falls to about zero without. The file reports what was measured, whichever way it comes out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import envs  # noqa: E402
from eval.from_checkpoint import evaluate_checkpoint  # noqa: E402
from eval.retrieval import chance  # noqa: E402
from seqjepa.config import apply_overrides, preset  # noqa: E402
from seqjepa.train import train  # noqa: E402

OBJECTS, SACCADES = "seqjepa/RotatingObjects-v0", "seqjepa/Saccades-v0"
# A narrow network and short sequences of 32-px views: what two shared CPU cores train in a few minutes.
COMMON = ["model.width=8", "model.act_dim=16", "model.pred_hidden=256", "model.agg_layers=2", "model.agg_heads=4",
          "train.batch_size=32", "optim.warmup_steps=40", "optim.lr=2e-3", "train.log_every=50",
          "eval.m_val=[1,2,3,4,5,6,7,8]", "eval.linear_epochs=30", "eval.mlp_epochs=30", "eval.mlp_hidden=256",
          "eval.batch_size=64", "eval.random_init_baseline=false"]
# Probe batch 64 (paper: 256 on ~40k objects): with 1000 train sequences that is ~470 Adam steps per head, enough for
# the heads to converge; at 256 a linear head gets ~120 steps and under-fits (R² of a_1 at M=1 well below 1).
OBJECT_SETTINGS = ["world.options.image_size=32", "world.options.num_categories=10", "world.bank_objects=480",
                   "world.bank_views=12", "eval.train_sequences=1000", "eval.test_sequences=500"]
SACCADE_SETTINGS = ["world.options={}", "world.source=live", "world.options.scene_size=64", "world.options.glimpse=16",
                    "world.options.per_class=50", "eval.train_sequences=1000", "eval.test_sequences=500"]
# Paper Fig. 6 (R² vs M = 1..7, mean of 3 seeds): saccade and angular path integration.
PAPER_PI = {"saccades": {"full": [1.0, .973, .928, .888, .876, .855, .867],
                         "no_actions": [.038, .022, -.021, .013, .012, -.003, .019],
                         "no_vision": [1.0, .982, .928, .868, .834, .764, .783]},
            "objects": {"full": [1.0, .851, .459, .376, .338, .319, .285],
                        "no_actions": [.181, .062, .045, .031, .032, .024, .029],
                        "no_vision": [1.0, .272, .210, .177, .148, .145, .137]}}
PAPER_ACC = [81.72, 84.92, 86.14, 86.87, 87.41, 87.23, 87.48, 87.51]  # 3DIEBench, M_tr = 3, M_val = 1..8


@dataclasses.dataclass
class Run:
    key: str
    label: str
    env: str
    m_tr: int
    overrides: list[str]


def runs(quick: bool) -> list[Run]:
    out = [Run("act3", "objects, actions, M_tr=3", OBJECTS, 3, []),
           Run("none3", "objects, no actions, M_tr=3", OBJECTS, 3, ["model.act_cond=none"]),
           Run("act1", "objects, actions, M_tr=1", OBJECTS, 1, []),
           Run("none1", "objects, no actions, M_tr=1", OBJECTS, 1, ["model.act_cond=none"])]
    if SACCADES in envs.WORLDS:
        out.append(Run("sacc", "saccades, actions, M_tr=4", SACCADES, 4, []))
    return out[:1] + out[-1:] if quick else out


def config_for(run: Run, args) -> list[str]:
    world = OBJECT_SETTINGS if run.env == OBJECTS else SACCADE_SETTINGS
    quick = (["eval.train_sequences=200", "eval.test_sequences=100", "eval.linear_epochs=5", "eval.mlp_epochs=5",
              "world.bank_objects=100"] if args.quick else [])
    return [f"world.env={run.env}", *COMMON, *world, f"train.seq_len={run.m_tr}", *run.overrides,
            f"train.steps={args.steps}",
            f"train.seed={args.seed}", f"eval.seed={args.seed}", f"train.threads={args.threads}",
            "train.progress=off", f"world.cache_dir={args.cache_dir}", *quick]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="training steps of every run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--runs-dir", default="runs/findings", help="where the run folders go")
    p.add_argument("--cache-dir", default="~/.cache/seqjepa")
    p.add_argument("--out", default=str(ROOT / "docs" / "findings.md"))
    p.add_argument("--quick", action="store_true", help="two runs, small probes: checks the script runs")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite --out from RUNS_DIR/findings.json (the record of the last full run), no training")
    args = p.parse_args(argv)
    record_path = Path(args.runs_dir) / "findings.json"
    if args.report_only:
        record = json.loads(record_path.read_text())
    else:
        record = measure(args, "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])),
                                                                                  *(argv or sys.argv[1:])]))
        record_path.write_text(json.dumps(record, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(record))
    print(f"wrote {args.out} (runs took {record['total_s'] / 60:.1f} min; record: {record_path})")
    return 0


def measure(args, command: str) -> dict:
    """Train and evaluate every run; returns the record the report is written from."""
    torch.set_num_threads(args.threads)
    t_all, rows = time.time(), []
    for run in runs(args.quick):
        cfg = preset("cpu")
        overrides = config_for(run, args)
        apply_overrides(cfg, overrides)
        run_dir = Path(args.runs_dir) / f"{run.key}-s{args.seed}"
        print(f"== {run.label}: training {args.steps} steps -> {run_dir}", flush=True)
        t0 = time.time()
        train(cfg, run_dir, log=lambda s: print("  " + s, flush=True) if "step" in s else None)
        t1 = time.time()
        res = evaluate_checkpoint(run_dir / "latest.pt", suites="all", log=lambda s: None)
        print(f"   trained in {t1 - t0:.0f} s, evaluated in {time.time() - t1:.0f} s", flush=True)
        rows.append({**dataclasses.asdict(run), "train_s": t1 - t0, "eval_s": time.time() - t1,
                     "settings": overrides, "results": res["trained"]})
    return {"command": command, "ood_rule": "outside-box", "total_s": time.time() - t_all, "steps": args.steps,
            "seed": args.seed,
            "threads": args.threads, "runs_dir": args.runs_dir, "torch": torch.__version__, "runs": rows}


# -- the report --------------------------------------------------------------------------------------------------------


def v(res: dict, key: str, field: str = "value") -> float | None:
    entry = res["metrics"].get(key)
    return None if entry is None else entry.get(field)


def fmt(x: float | None, pct: bool = False) -> str:
    return "–" if x is None else (f"{x:.1f}" if pct else f"{x:.3f}")


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def report(record: dict) -> str:
    """docs/findings.md from a record of :func:`measure`."""
    fields = {f.name for f in dataclasses.fields(Run)}
    results = {r["key"]: (Run(**{k: r[k] for k in fields}), r["results"]) for r in record["runs"]}
    timing = {r["key"]: (r["train_s"], r["eval_s"]) for r in record["runs"]}
    settings = {r["key"]: r["settings"] for r in record["runs"]}
    obj = {k: r for k, (run, r) in results.items() if run.env == OBJECTS}
    label = {k: run.label for k, (run, _) in results.items()}
    out = ["# The paper's findings at CPU scale\n",
           f"Generated by `benchmarks/paper_findings.py` — reproduce with:\n\n```\n{record['command']}\n```\n",
           f"{len(results)} runs of {record['steps']} steps each, seed {record['seed']}, {record['threads']} torch "
           f"thread(s), torch {record['torch']}; total {record['total_s'] / 60:.1f} min on a shared CPU. Numbers are one seed at a "
           f"tiny fraction of the paper's compute (its runs: 1000 epochs of 3DIEBench on an A100); read them as "
           f"directions, not as a reproduction of the paper's values.\n"]
    shared = [o for o in settings[next(iter(settings))] if all(o in v for v in settings.values())
              and not o.startswith(("world.cache_dir", "train.progress"))]
    out.append("## Runs\n\nAll runs start from the `cpu` preset with `" + " ".join(shared) + "`.\n\n" + table(
        ["run", "train s", "eval s", "own settings"],
        [[label[k], f"{timing[k][0]:.0f}", f"{timing[k][1]:.0f}",
          "`" + " ".join(o for o in settings[k] if o not in shared
                         and not o.startswith(("world.cache_dir", "train.progress"))) + "`"] for k in results]) + "\n")
    if obj:
        ms = range(1, 9)
        rows = [[str(m), *(fmt(v(r, f"linear_probe/z_agg/M={m}"), True) for r in obj.values()),
                 f"{PAPER_ACC[m - 1]:.1f}"] for m in ms]
        rows.append(["encoder", *(fmt(v(r, "linear_probe/encoder"), True) for r in obj.values()), "82.49"])
        out.append("## 1. Linear-probe top-1 (%) on z_agg vs M_val (rotating objects, 10 classes)\n\n"
                   + table(["M_val", *(label[k] for k in obj), "paper (3DIEBench, M_tr=3)"], rows) + "\n")
        out.append(finding_accuracy(obj, label))
        keys = [("top-1 z_agg M_val=5 (%)", "linear_probe/z_agg/M=5", True),
                ("k-NN top-1 z_agg M_val=5 (%)", "knn/z_agg/M=5", True),
                ("rotation R² [z_1,z_2] (mean over dims)", "equivariance/rotation", False),
                ("rotation R² (global, SIE)", ("equivariance/rotation", "r2_global"), False),
                ("absolute rotation R²", "absolute/rotation", False),
                ("OOD top-1 z_agg M_val=5 (%)", "ood/linear_probe/z_agg/M=5", True),
                ("OOD rotation R²", "ood/equivariance/rotation", False),
                ("OOD absolute rotation R²", "ood/absolute/rotation", False)]
        rows = []
        for name, key, pct in keys:
            k, field = key if isinstance(key, tuple) else (key, "value")
            rows.append([name, *(fmt(v(r, k, field), pct) for r in obj.values())])
        for kk in ("mrr", "hit@1", "hit@5"):
            rows.append([f"retrieval {kk}, M_val = M_tr (chance)", *(
                retrieval_cell(r, f"retrieval/M={results[k][0].m_tr}/{kk}", kk) for k, r in obj.items())])
        ood_note = ("OOD views: poses uniform over the rotations outside the training Euler box "
                    "(`envs.rotations.sample_euler`)." if record.get("ood_rule") == "outside-box" else
                    "**The OOD rows were measured with the earlier rule (every Euler angle in (π/2, π) ∪ (−π, −π/2), "
                    "3DIEBench-OOD's), which names the training rotations again: they are not out-of-distribution "
                    "results. Rerun this script for OOD numbers with the current rule.**")
        out.append("## 2. Invariance, equivariance, OOD, retrieval (rotating objects)\n\n"
                   + table(["metric", *(label[k] for k in obj)], rows) + "\n\n" + ood_note + "\n")
        out.append("Paper, 3DIEBench (Tables 1, 4, 9, 10): seq-JEPA (3,5) top-1 87.41, rotation R² 0.71, absolute "
                   "0.74; (1,1) 84.08 / 0.65 / 0.69; no action conditioning (M_tr=3): top-1 87.36 at M_val=5, R² "
                   "0.29, absolute 0.37; OOD (3,3): top-1 65.03, rotation R² −0.71, absolute −0.211; retrieval "
                   "(3,3) MRR 0.388 / H@1 0.273 / H@5 0.468, (1,1) 0.340 / 0.241 / 0.442.\n")
        out.append(finding_actions(obj, label))
    pi_rows, pi_cols = [], []
    for k, (run, r) in results.items():
        if run.key in ("act3", "sacc"):
            world = "saccades" if run.env == SACCADES else "objects"
            factor = "position" if world == "saccades" else "rotation"
            for cond in ("full", "no_actions", "no_vision"):
                pi_cols.append((f"{label[k]}: {cond}", r, f"path_integration/{factor}/{cond}/M=",
                                PAPER_PI[world][cond]))
    if pi_cols:
        for m in range(1, 8):
            pi_rows.append([str(m), *(f"{fmt(v(r, key + str(m)))} ({paper[m - 1]:.2f})" for _, r, key, paper
                                      in pi_cols)])
        out.append("## 3. Path integration: R² of x_1 → x_{M+1} from [z_agg, a_M] (paper Fig. 6 in brackets)\n\n"
                   + table(["M", *(c[0] for c in pi_cols)], pi_rows) + "\n")
        out.append(finding_path(results, label))
    out.append(verdict(results))
    out.append(READING)
    runs_dir = record["runs_dir"]
    out.append("## Protocols\n\nEvery number above is in `" + runs_dir + "/<run>/eval.json` with its protocol "
               "(probe, epochs, lr, batch, views, sampling, seed); plots are `eval_accuracy_vs_m.png` and "
               "`eval_path_integration.png` in each run folder, and `tensorboard --logdir " + runs_dir +
               "` shows the projector, imagination rollouts and [AGG] attention.\n")
    return "\n".join(out)


READING = """## Reading these numbers

- Chance is 10 % top-1 (10 classes); for retrieval the bracket gives what a random ranking of the same candidates
  scores.
- An R² below 0 means the head predicts the test split worse than its mean: with 1000 probe sequences an MLP head
  over-fits features that carry little of the target (the paper fits its heads on ~42k objects).
- Path integration at M = 1 is ≈ 1 by construction when a_1 is given (the target is a_1); from M = 2 on it measures
  integration. The ablations are applied at inference only, to the action-conditioned model.
- These runs have no random-init column. On the default saccade world a *random-init* network already scores
  path-integration R² ≈ 0.97 at M = 7 and the cpu-preset model trained 1500 steps only 0.41 (`docs/worlds.md`):
  the full / no-actions / no-vision pattern shows which pathway carries the actions, not that training taught it.
"""


def verdict(results: dict) -> str:
    """The paper's three claims checked against this run by fixed rules (stated in each line)."""
    r = {k: res for k, (_, res) in results.items()}
    lines = ["## Verdict (fixed rules, applied to the numbers above)\n"]
    if "act3" in r:
        a1, a8 = v(r["act3"], "linear_probe/z_agg/M=1"), v(r["act3"], "linear_probe/z_agg/M=8")
        top = max(x for x in (a1, a8) if x is not None)
        if top < 2 * 100 / 10:
            lines.append(f"- The rotating-objects runs are under-trained at this budget: top-1 stays below twice "
                         f"chance ({top:.1f} %), so findings 1 and 2 cannot be judged from them.")
        lines.append(f"- z_agg top-1 rises with M_val (rule: M_val=8 beats 1 by > 2 points, action model "
                     f"M_tr=3): {'yes' if a8 - a1 > 2 else 'no'} ({a1:.1f} → {a8:.1f}).")
    if "act3" in r and "none3" in r:
        ra, rn = v(r["act3"], "equivariance/rotation"), v(r["none3"], "equivariance/rotation")
        ta, tn = v(r["act3"], "linear_probe/z_agg/M=5"), v(r["none3"], "linear_probe/z_agg/M=5")
        ok = ra - rn > 0.1 and abs(ta - tn) < 3
        lines.append(f"- Without actions rotation R² collapses while top-1 holds (rule: R² drops by > 0.1 and "
                     f"top-1 moves < 3 points, M_tr=3): {'yes' if ok else 'no'} (R² {ra:.3f} → {rn:.3f}, top-1 "
                     f"{ta:.1f} → {tn:.1f}).")
    if "sacc" in r:
        full = v(r["sacc"], "path_integration/position/full/M=7")
        none = v(r["sacc"], "path_integration/position/no_actions/M=7")
        ok = full > 0.5 and none < 0.1
        lines.append(f"- Saccade path integration stays high with actions and falls to about zero without (rule: "
                     f"R² at M=7 > 0.5 with, < 0.1 without): {'yes' if ok else 'no'} ({full:.3f} vs {none:.3f}).")
    return "\n".join(lines) + "\n"


def retrieval_cell(res: dict, key: str, metric: str) -> str:
    """The value with what a random ranking of the same number of candidates scores."""
    entry = res["metrics"].get(key)
    if entry is None:
        return "–"
    return f"{entry['value']:.3f} ({chance(entry['protocol']['candidates'])[metric]:.3f})"


def delta(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{b - a:+.2f}"


def finding_accuracy(obj: dict, label: dict) -> str:
    lines = ["**Measured — z_agg top-1 from M_val = 1 to 8** (paper: +5.8 points for M_tr=3, +1.5 for M_tr=1):"]
    for k, r in obj.items():
        a, b = v(r, "linear_probe/z_agg/M=1"), v(r, "linear_probe/z_agg/M=8")
        lines.append(f"- {label[k]}: {fmt(a, True)} → {fmt(b, True)} ({delta(a, b)} points)")
    return "\n".join(lines) + "\n"


def finding_actions(obj: dict, label: dict) -> str:
    lines = ["**Measured — with vs without action conditioning** (paper: rotation R² 0.71 → 0.29, top-1 87.4 → "
             "87.4):"]
    for m_tr in ("3", "1"):
        a, n = obj.get(f"act{m_tr}"), obj.get(f"none{m_tr}")
        if a is None or n is None:
            continue
        ra, rn = v(a, "equivariance/rotation"), v(n, "equivariance/rotation")
        ta, tn = v(a, "linear_probe/z_agg/M=5"), v(n, "linear_probe/z_agg/M=5")
        lines.append(f"- M_tr={m_tr}: rotation R² {fmt(ra)} → {fmt(rn)} ({delta(ra, rn)}); top-1 at M_val=5 "
                     f"{fmt(ta, True)} → {fmt(tn, True)} ({delta(ta, tn)} points)")
    return "\n".join(lines) + "\n"


def finding_path(results: dict, label: dict) -> str:
    lines = ["**Measured — path integration at M = 7, with actions vs action embeddings zeroed vs vision zeroed** "
             "(paper saccades: 0.87 / 0.02 / 0.78; rotations: 0.29 / 0.03 / 0.14):"]
    for k, (run, r) in results.items():
        if run.key not in ("act3", "sacc"):
            continue
        f = "position" if run.env == SACCADES else "rotation"
        vals = [v(r, f"path_integration/{f}/{c}/M=7") for c in ("full", "no_actions", "no_vision")]
        lines.append(f"- {label[k]}: " + " / ".join(fmt(x) for x in vals))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
