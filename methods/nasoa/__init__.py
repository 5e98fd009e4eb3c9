"""NASOA (paper ``001_5ac3307e6bfdd113.txt``): ET-NAS zoo, NSGA-II search, online schedule generator.

``encoding``/``builder``/``zoo``: the ET-NAS encoding, the network builder and the 12-model
zoo (registered as ``etnas_a`` .. ``etnas_l``); ``series``: the ResNet / RegNetY series of the
Table 4 baselines (``resnet34``, ``resnet101``, ``regnet_y_*``); ``steptime``: Table 2 measurements;
``nsga``: the modified NSGA-II; ``metadata``: meta-data runs and meta-features (POT EMD);
``predictor``: adaptive-depth MLP with Hedge backpropagation; ``generator``: G(D, T) and
the RS/BOHB baselines; ``method``: registered methods; ``claims``: paper checks.
"""

from methods.nasoa import (  # noqa: F401  (register the models)  # noqa: F401
    claims,
    method,
    search_method,  # noqa: F401  (registers nasoa_nsga)
    series,
    zoo,
)
