"""Datasets: the registry and ``load_splits`` (``registry``), the embedded and torchvision
sets, the split policy (``policy``: seeded stratified splits) and the device loader (``loader``).
"""
