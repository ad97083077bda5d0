"""The paper's numbers, keyed like evaluate()'s metrics, for the worlds that model the paper's datasets.

Only seq-JEPA conditioned on rotation with M_tr = 3 on 3DIEBench (ResNet-18, 128 px, 55 classes, 300-epoch
probes): Table 1 (rotation R², 0.71; individual rotation R², 0.74), Table 12 (encoder top-1, 82.49), Fig. 7 right
(z_agg top-1 against M_val; 87.41 at M_val = 5 as in Table 1), Table 10 (retrieval of seq-JEPA (3, 3), M_val = 3)
and Fig. 6b (angular path integration, read from the plotted data to about ±0.005). They sit beside a run's
numbers as a reference point, labelled as the paper's 3DIEBench: the procedural rotating objects are 3DIEBench's
protocol, not its images, and the CPU presets are far smaller. The OOD numbers are left out: this project's OOD
poses follow another rule than 3DIEBench-OOD (README).

>>> paper_values("RotatingObjects")[1]["equivariance/rotation"]
0.71
>>> paper_values("Saccades") is None
True
"""

from __future__ import annotations

PAPER_3DIEBENCH: dict[str, float] = {
    **{f"linear_probe/z_agg/M={m}": v for m, v in
       enumerate((81.72, 84.92, 86.14, 86.87, 87.41, 87.23, 87.48, 87.51), start=1)},
    "linear_probe/encoder": 82.49,
    "equivariance/rotation": 0.71,
    "absolute/rotation": 0.74,
    "retrieval/M=3/mrr": 0.388, "retrieval/M=3/hit@1": 0.273, "retrieval/M=3/hit@5": 0.468,
    **{f"path_integration/rotation/{condition}/M={m}": v
       for condition, values in (("full", (1.000, 0.851, 0.459, 0.376, 0.338, 0.319, 0.285)),
                                 ("no_actions", (0.181, 0.062, 0.045, 0.031, 0.032, 0.024, 0.029)),
                                 ("no_vision", (1.000, 0.272, 0.210, 0.177, 0.148, 0.145, 0.137)))
       for m, v in enumerate(values, start=1)},
}

# World classes whose evaluation the 3DIEBench numbers apply to: the procedural stand-in and the dataset itself.
PAPER_WORLDS = {"RotatingObjects": ("paper (3DIEBench)", PAPER_3DIEBENCH),
                "IEBench": ("paper (3DIEBench)", PAPER_3DIEBENCH)}

LEGEND = ("paper (3DIEBench): seq-JEPA conditioned on rotation, M_tr = 3, on 3DIEBench in the paper (ResNet-18, "
          "128 px, 55 classes, 300-epoch probes); a reference point, not this run's setting")


def paper_values(world_class: str) -> tuple[str, dict[str, float]] | None:
    """(column label, {metric: the paper's value}) for evaluations in ``world_class``, or None."""
    return PAPER_WORLDS.get(world_class)
