"""Registered methods. Importing this package registers every method module in it.

A new method is one new module or subpackage here (a frozen dataclass ``Config``, a
class with ``fit``/``evaluate`` decorated with ``@register_method``, the checks of its
paper's claims, and any models it adds) plus one suite file. Every module and
subpackage of ``methods`` is imported here, so adding one needs no other edit.
"""

import importlib
import pkgutil

# The claims (data) first: each method's module attaches checks to them, and a check for an
# unregistered claim is refused (``bench.results.claims.register_check``).
importlib.import_module(f"{__name__}.paper_claims")
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
del _module
