"""Running cells: the grid and its tiers (``grid``), one cell end to end (``runner``), the
pytest plugin (``plugin``), cluster execution (``scale``), and opening a run in the store
(``run``). Importing this package imports nothing heavy.
"""
