"""Frozen-model evaluation of seq-JEPA (paper §3): feature collection, probe heads and the full suite.

>>> from eval import evaluate, format_table                                      # doctest: +SKIP
>>> res = evaluate(model, world_train, world_test, cfg.eval, device="cuda")      # doctest: +SKIP
>>> print(format_table({"trained": res}))                                        # doctest: +SKIP
"""

from .features import collect
from .probes import fit_classifier, fit_regressor, r2_score, standardize
from .suite import evaluate, format_table

__all__ = ["collect", "evaluate", "fit_classifier", "fit_regressor", "format_table", "r2_score", "standardize"]
