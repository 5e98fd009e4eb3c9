"""The results store and what is read from it: the schema and its migrations (``schema``), the
store (``store``: the only module that writes SQL), the summary table (``report``), exports
(``exports``), statistics (``stats``, ``analysis``) and claim verdicts (``claims``).
"""
