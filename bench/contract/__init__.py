"""The contract between the harness and a method, and the plain data a cell is made of.

- ``interface``: ``Method`` (the protocol), ``Task``, ``Fitted``, ``EVAL_KEYS``;
- ``settings``: ``TrainConfig``, ``PretrainRecipe``, ``TaskSettings`` (torch-free);
- ``split``: ``Split``, one split of a dataset resident on a device;
- ``recorder``: ``Recorder``, what a method reports (metrics, curves, step times);
- ``config``: frozen dataclass configs from overrides, strict keys (``make_config``);
- ``cell``: ``CellSpec`` / ``CellResult``, one grid cell and what running it produced;
- ``units``: the unit suffix every metric name carries.

Nothing here imports the engine, the data loaders or the store.
"""
