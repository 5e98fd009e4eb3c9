"""One seed derivation for every random stream of the Tr-NAS methods.

Each stream is named by its *role* (what it initialises or orders), the cell's seed and an
index (the architecture number, the tuning step, ...): ``role_seed(role, seed, index)`` is a
63-bit integer from a BLAKE2b hash of the three. Two different (role, seed, index) triples give
unrelated streams, so no two roles ever share one. Before this module the Original proxy of
architecture k at seed 0 was initialised with ``0 * 100_003 + k`` and its reference training
with ``0 * 7919 + k``: the same weights, bit for bit, which correlates the proxy's noise with
the reference's and favours Original in every rank correlation at seed 0.

Roles (``ROLES``; an unknown role is an error, so a typo cannot silently alias a stream):

===================  ==========================================================
``proxy-init``       initial weights of the proxy network of architecture k
``proxy-data``       batch order / augmentation of that proxy training
``reference-init``   initial weights of the harness reference training of k
``reference-data``   batch order / augmentation of that reference training
``topk-init``        initial weights of the proxy network of the k-th of the table's top-k
``topk-data``        batch order / augmentation of that top-k proxy training
``pretrain-init``    B's initial weights when pretrained on the target
``pretrain-data``    B's pretraining batch order
``rea``              regularized evolution's own choices (population, tournaments, mutations)
``final-init``       the found architecture's final training, weights
``final-data``       the found architecture's final training, batch order
``supernet-init``    DARTS+PT supernet weights and alpha
``search-data``      DARTS+PT weight/architecture split, search batches, edge order
``tune-data``        DARTS+PT's projection tuning (one fit, index 0)
``hessian-probe``    the start vector of Fig. 9's power iteration (``methods.trnas.hessian``)
``memory-init``      ``trnas_memory`` network k
``cka-init``         ``trnas_cka`` network k
``cka-data``         ``trnas_cka`` training of network k
===================  ==========================================================
"""

from __future__ import annotations

import hashlib

ROLES = frozenset(
    {
        "proxy-init",
        "proxy-data",
        "reference-init",
        "reference-data",
        "topk-init",
        "topk-data",
        "pretrain-init",
        "pretrain-data",
        "rea",
        "final-init",
        "final-data",
        "supernet-init",
        "search-data",
        "tune-data",
        "hessian-probe",
        "memory-init",
        "cka-init",
        "cka-data",
    }
)


def role_seed(role: str, seed: int, index: int = 0) -> int:
    """The seed of stream ``role`` for cell seed ``seed`` and item ``index`` (0 <= result < 2**63)."""
    if role not in ROLES:
        raise ValueError(f"unknown seed role {role!r}; valid roles: {', '.join(sorted(ROLES))}")
    digest = hashlib.blake2b(f"trnas/{role}/{int(seed)}/{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


__all__ = ["ROLES", "role_seed"]
