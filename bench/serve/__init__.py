"""``bench serve``: the read-only Datasette app (``app``) and its metadata (``datasette/``)."""
