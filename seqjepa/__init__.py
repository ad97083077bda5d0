"""seqjepa: seq-JEPA (Ghaemi, Muller, Bakhtiari, NeurIPS 2025) as a library.

The model is :class:`seqjepa.model.SeqJEPA`; configuration lives in :mod:`seqjepa.config`; the training loop in
:mod:`seqjepa.train`. Worlds are in the top-level ``envs`` package, policies in ``agents``, probes in ``eval``.
"""

__version__ = "0.1.0"
