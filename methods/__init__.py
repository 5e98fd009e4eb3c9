"""Registered methods. Importing this package registers every method module in it.

A new method is one new module here (a frozen dataclass ``Config``, a class with
``fit``/``evaluate`` decorated with ``@register_method``, and the checks of its paper's
claims) plus one suite file.
"""
from methods import baselines, paper_claims, two_stage  # noqa: F401
