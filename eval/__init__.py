"""Frozen-model evaluation of seq-JEPA (paper §3): feature collection, probe heads, the suites and TensorBoard.

One module per suite (linear_probe, equivariance, action_use, path_integration, ood, retrieval, knn), run by
:func:`evaluate`; ``eval.from_checkpoint.evaluate_checkpoint`` checks a checkpoint, evaluates it alone and writes
the report (numbers beside their yardsticks: random init, chance, ``eval.paper``'s values), ``eval.tensorboard``
logs what the model predicts; long steps show their progress through ``seqjepa.progress``.

>>> from eval import evaluate, format_table                                                  # doctest: +SKIP
>>> res = evaluate(model, world_train, world_test, cfg.eval, device="cuda", suites="all")    # doctest: +SKIP
>>> print(format_table({"trained": res}))                                                    # doctest: +SKIP
"""

from .features import collect
from .probes import fit_classifier, fit_regressor, r2_score, standardize
from .suite import SUITE_NAMES, evaluate, format_table

__all__ = ["SUITE_NAMES", "collect", "evaluate", "fit_classifier", "fit_regressor", "format_table", "r2_score",
           "standardize"]
