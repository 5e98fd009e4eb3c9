"""Two-stage architectural fine-tuning (paper ``000_c76f86a90fd00e2a.txt``).

``space``: the 3x3/5x5 search space by mutation; ``controller``: the LSTM controller,
REINFORCE and early stopping; ``method``: the registered ``two_stage`` method;
``claims``: the checks of the paper's headline claims.
"""

from methods.two_stage import claims, method  # noqa: F401
