"""Architectures: ``MappedNet`` and its structural map (``net``), the ResNets (``resnets``),
source weights (``pretrain``: ImageNet checkpoints or harness-pretrained sources) and what one
training step costs (``cost``).
"""
