"""The regression gate: its rules (``rules``), the two sides it compares (``reference``), the
committed reference file (``reference_file``), the noise model (``noise``) and its settings
(``settings``).
"""
