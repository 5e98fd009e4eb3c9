"""The papers' headline claims as data (``paper_claims.json``, 26 claims of four papers).

Each method module attaches the executable check of its own claims with
``bench.results.claims.register_check``; until it does, a claim reads "not yet measured".
"""

from pathlib import Path

from bench.results.claims import load_claims_file, register_claims

register_claims(load_claims_file(Path(__file__).with_name("paper_claims.json")))
