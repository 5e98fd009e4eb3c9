"""Suite-wide settings. The grids live in each suite file as ``GRID``; the ``--bench-*``
options (tier, seeds, device, database, resume) come from the harness's pytest plugin."""
