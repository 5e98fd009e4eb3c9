"""Proxyless neural architecture adaptation (paper 004), the NAT baseline and the SimCLR variant.

Modules: ``edges`` (theta edges, FactorizedReduce, discretisation), ``cells`` (cell-graph
models: resnet20_cells, mobilenetv2_cifar, darts_v2 / darts_v2_8, resnet50_cifar,
proxylessnas_cifar), ``method`` (``original``, ``adapt_cell``, ``adapt_full``), ``nat``
(GCN policy + REINFORCE), ``ssl`` (NT-Xent, SimCLR augmentation, weighted kNN), ``simclr``
(``simclr``, ``simclr_adapt_cell``, ``simclr_adapt_full``), ``claims``.
"""

from methods.proxyless import cells, claims, edges, method, nat, simclr, ssl  # noqa: F401  (registers models, methods, checks)
