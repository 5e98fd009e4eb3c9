"""Tr-NAS / Transfer-NAS (paper ``003_cb5dca99ce803e17.txt``): NAS with frozen pretrained blocks.

``space``: the NAS-Bench-201 cell space (strings, indices, isomorphism, mutation);
``network``: the NB201 macro network and the Tr-Net-i-j prefix surgery;
``supernet``: the DARTS supernet with shared architecture weights; ``common``: protocols
and candidate training; ``rank``, ``rea``, ``darts_pt``, ``memory``: the registered
methods ``trnas_rank``, ``trnas_rea``, ``trnas_dartspt``, ``trnas_memory``; ``darts_space``:
the DARTS two-input space with a wide ResNet-20 prefix, ``trnas_dartspt_darts``;
``cka``: linear CKA and ``trnas_cka`` (Figs. 1-2, B's blocks vs trained NB201 cells);
``hessian``: the dominant Hessian eigenvalue w.r.t. alpha and ``trnas_dartspt``'s probe (Fig. 9);
``claims``: the checks of the paper's headline claims.
"""

from methods.trnas import cka, claims, darts_pt, darts_space, memory, rank, rea  # noqa: F401
