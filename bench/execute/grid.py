"""Grid declarations: what a suite runs, expanded into validated ``CellSpec``s.

A suite declares one ``Grid``: method entries (a label, ``"last_k"`` or
``"last_k:k1"``, mapped to config overrides), datasets, models, seeds, task settings,
and a ``TierPlan`` per budget tier with the overrides that make that tier smoke-,
short- or paper-sized. ``Grid.cells(tier, ...)`` resolves every config and task
setting now, so an unknown method/model/dataset, a bad config key, a missing dataset
folder, an impossible source, a batch larger than the train split or a ``k`` larger than
the model's blocks (the method's ``check_cell``) fails at collection with a message that lists
what is valid, instead of failing cell by cell later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.contract.cell import TIERS, CellSpec
from bench.contract.config import canonical_json, config_dict, make_config
from bench.contract.settings import TaskSettings
from bench.errors import BenchError, InvalidGrid
from bench.registry import DATASETS, METHODS, MODELS

__all__ = ["TIERS", "Grid", "TierPlan", "parse_seeds"]


@dataclass(frozen=True)
class TierPlan:
    """Overrides that size a grid for one tier.

    ``task``: TaskSettings overrides; ``config``: overrides applied to every method entry
    (dotted keys such as ``"train.steps"``); ``methods``: per-label overrides;
    ``models``: per-model TaskSettings overrides (e.g. a different width per model);
    ``dataset_task``: per-dataset TaskSettings overrides, applied after ``models`` (e.g.
    Tiny-ImageNet's native 64 px where CIFAR-10 uses 32);
    ``skip_methods``: method labels this tier leaves out (e.g. an ablation axis that only
    the short and paper tiers run in full);
    ``seeds``: the tier's default seeds (the grid's otherwise); ``datasets``: the tier's
    target datasets (the grid's otherwise), e.g. CIFAR-10 at paper tier where the smoke
    tier uses an embedded set.
    """

    task: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dataset_task: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    skip_methods: Sequence[str] = ()
    seeds: Sequence[int] | None = None
    datasets: Sequence[str] | None = None


@dataclass(frozen=True)
class Grid:
    """A suite's dataset x model x method x seed grid; see the module docstring."""

    suite: str
    methods: Mapping[str, Mapping[str, Any]]
    datasets: Sequence[str]
    models: Sequence[str]
    seeds: Sequence[int] = (0, 1, 2)
    task: Mapping[str, Any] = field(default_factory=dict)
    tiers: Mapping[str, TierPlan] = field(default_factory=dict)

    def cells(
        self,
        tier: str,
        *,
        seeds: Sequence[int] | None = None,
        device: str = "auto",
        mode: str = "accuracy",
        data_root: str | None = None,
        download: bool = False,
        threads: int = 0,
        only_datasets: Sequence[str] | None = None,
    ) -> list[CellSpec]:
        """Every cell of the grid at ``tier``, validated; raises ``InvalidGrid``.

        ``only_datasets`` keeps the tier's cells on these datasets (``--bench-datasets``), so
        a user holding only some of a tier's datasets can still run the rest.
        """
        try:
            return self._cells(tier, seeds, device, mode, data_root, download, threads, only_datasets)
        except InvalidGrid:
            raise
        except BenchError as err:
            raise InvalidGrid(f"suite '{self.suite}' at tier '{tier}': {err}") from err

    def _cells(
        self,
        tier: str,
        seeds: Sequence[int] | None,
        device: str,
        mode: str,
        data_root: str | None,
        download: bool,
        threads: int,
        only_datasets: Sequence[str] | None,
    ) -> list[CellSpec]:
        plan = self._plan(tier)
        seeds = list(seeds if seeds is not None else (plan.seeds if plan.seeds is not None else self.seeds))
        datasets = tuple(plan.datasets if plan.datasets is not None else self.datasets)
        self._check_basics(seeds, plan, datasets)
        check_device_name(device)
        if mode not in MODES:
            raise InvalidGrid(f"--bench-mode {mode!r}: valid modes: {', '.join(MODES)}")
        if only_datasets is not None:
            if not only_datasets:
                raise InvalidGrid(
                    f"--bench-datasets names no dataset; suite '{self.suite}' at tier '{tier}' runs "
                    f"{', '.join(datasets)}"
                )
            unknown = [d for d in only_datasets if d not in datasets]
            if unknown:
                raise InvalidGrid(
                    f"suite '{self.suite}' at tier '{tier}' runs no dataset {', '.join(unknown)}; "
                    f"its datasets: {', '.join(datasets)}"
                )
            datasets = tuple(d for d in datasets if d in only_datasets)
        for name in datasets:
            DATASETS.get(name)
        from bench.data.registry import check_available

        for name in datasets:
            check_available(name, data_root, download)
        configs = {label: self._resolve_config(label, plan) for label in self.methods if label not in plan.skip_methods}
        specs = []
        for model in self.models:
            MODELS.get(model)
            tasks = {d: self._task_settings(model, plan, datasets, d) for d in datasets}
            for source in {t.source for t in tasks.values() if t.source and t.source != "imagenet"}:
                check_available(source, data_root, download)  # a file source's files, at collection
            task_jsons = {d: canonical_json(config_dict(t)) for d, t in tasks.items()}
            for label, (config, config_json) in configs.items():
                for dataset in datasets:
                    self._check_cell(label, config, dataset, model, tasks[dataset])
                    task_json = task_jsons[dataset]
                    for seed in seeds:
                        specs.append(
                            CellSpec(
                                suite=self.suite,
                                method=label.split(":", 1)[0],
                                variant=label,
                                dataset=dataset,
                                model=model,
                                seed=int(seed),
                                tier=tier,
                                config_json=config_json,
                                task_json=task_json,
                                device=device,
                                mode=mode,
                                data_root=data_root,
                                download=download,
                                threads=threads,
                            )
                        )
        # Seed-major (stable within a seed): a worker or a Slurm task that takes a contiguous run of
        # cells gets the cells of one seed together, which share its per-seed caches (a source
        # pretraining, a Tr-NAS reference), instead of two workers computing or waiting on the same
        # entry at once. Results do not depend on the order (the shuffled calibration run checks it).
        specs.sort(key=lambda s: s.seed)
        ids = [s.test_id for s in specs]
        if len(set(ids)) != len(ids):
            raise InvalidGrid(f"suite '{self.suite}': duplicate cells {sorted({i for i in ids if ids.count(i) > 1})}")
        return specs

    def _plan(self, tier: str) -> TierPlan:
        if tier not in TIERS:
            raise InvalidGrid(f"unknown tier '{tier}'; valid tiers: {', '.join(TIERS)}")
        if self.tiers and tier not in self.tiers:
            raise InvalidGrid(
                f"suite '{self.suite}' defines no settings for tier '{tier}'; it defines: {', '.join(self.tiers)}"
            )
        return self.tiers.get(tier, TierPlan())

    def _check_basics(self, seeds: list[int], plan: TierPlan, datasets: tuple[str, ...]) -> None:
        if not self.suite:
            raise InvalidGrid("a grid needs a suite name")
        for what, values in (("methods", self.methods), ("datasets", datasets), ("models", self.models)):
            if not values:
                raise InvalidGrid(f"suite '{self.suite}': the grid lists no {what}")
        if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
            raise InvalidGrid(f"suite '{self.suite}': seeds must be a non-empty list of integers >= 0, got {seeds}")
        if len(set(seeds)) != len(seeds):
            raise InvalidGrid(f"suite '{self.suite}': repeated seeds in {seeds}")
        unknown = sorted(set(plan.methods) - set(self.methods))
        if unknown:
            raise InvalidGrid(
                f"suite '{self.suite}': tier overrides for {unknown} which are not "
                f"method entries of the grid ({', '.join(self.methods)})"
            )
        unknown = sorted(set(plan.skip_methods) - set(self.methods))
        if unknown:
            raise InvalidGrid(
                f"suite '{self.suite}': the tier skips {unknown} which are not method entries "
                f"of the grid ({', '.join(self.methods)})"
            )
        if not set(self.methods) - set(plan.skip_methods):
            raise InvalidGrid(f"suite '{self.suite}': the tier skips every method entry")
        unknown = sorted(set(plan.models) - set(self.models))
        if unknown:
            raise InvalidGrid(f"suite '{self.suite}': tier overrides for models {unknown} not in the grid")
        unknown = sorted(set(plan.dataset_task) - set(datasets))
        if unknown:  # checked against the tier's own datasets, before any --bench-datasets filter
            raise InvalidGrid(
                f"suite '{self.suite}': task overrides for datasets {unknown} which the tier "
                f"does not run ({', '.join(datasets)})"
            )

    def _resolve_config(self, label: str, plan: TierPlan) -> tuple[Any, str]:
        cls = METHODS.get(label.split(":", 1)[0])
        overrides = {**plan.config, **self.methods[label], **plan.methods.get(label, {})}
        config = make_config(cls.Config, overrides)
        return config, canonical_json(config_dict(config))

    def _task_settings(self, model: str, plan: TierPlan, datasets: tuple[str, ...], dataset: str) -> TaskSettings:
        settings = make_config(
            TaskSettings, {**self.task, **plan.task, **plan.models.get(model, {}), **plan.dataset_task.get(dataset, {})}
        )
        self._check_source(settings, model, datasets)
        return settings

    def _check_cell(self, label: str, config: Any, dataset: str, model: str, settings: TaskSettings) -> None:
        """The method's own collection-time check (``check_cell``: batch vs train split, k vs blocks)."""
        check = getattr(METHODS.get(label.split(":", 1)[0]), "check_cell", None)
        if check is None:
            return
        from bench.contract.interface import CellFacts
        from bench.data.registry import train_images

        try:
            check(config, CellFacts(dataset, model, settings, train_images(dataset, settings)))
        except BenchError as err:
            raise InvalidGrid(f"suite '{self.suite}', method entry '{label}': {err}") from err

    def _check_source(self, settings: TaskSettings, model: str, datasets: tuple[str, ...]) -> None:
        source = settings.source
        if source is None:
            return
        if source == "imagenet":
            from bench.models.net import model_info

            if not (model_info(model).imagenet_weights or model_info(model).imagenet_loader):
                raise InvalidGrid(
                    f"suite '{self.suite}': model '{model}' has no ImageNet weights; "
                    "use an embedded source such as 'mnist5k'"
                )
            if settings.width != 1.0:
                raise InvalidGrid(f"suite '{self.suite}': ImageNet weights need width 1.0, not {settings.width:g}")
            return
        from bench.data.registry import SOURCE_KINDS, dataset_info, list_sources

        if source not in DATASETS or dataset_info(source).kind not in SOURCE_KINDS:
            raise InvalidGrid(
                f"suite '{self.suite}': unknown source '{source}'; valid sources: imagenet, "
                + ", ".join(list_sources())
            )
        if source in datasets:
            raise InvalidGrid(
                f"suite '{self.suite}': dataset '{source}' is both the source and a target; "
                "its test split would have been seen in pretraining"
            )


MODES = ("accuracy", "speed")
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N")
_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def check_device_name(name: str) -> None:
    """Refuse a device name the runner cannot resolve (``gpu``, ``cuda:x``) before any cell runs.

    Whether the named device exists is a property of the machine the cell runs on: a CUDA device
    on a machine without one gives ``skipped`` rows, not a collection error."""
    if not _DEVICE_NAME.match(name):
        raise InvalidGrid(f"--bench-device {name!r}: valid forms: {', '.join(DEVICE_FORMS)}")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"``, ``"0-4"`` or ``"3"`` (a single seed) into a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise ValueError("empty item")
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise InvalidGrid(f"--bench-seeds: range {part!r} runs backwards; write '{hi}-{lo}'")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except InvalidGrid:
        raise
    except ValueError:
        raise InvalidGrid(
            f"--bench-seeds: cannot parse {text!r}; use non-negative integers, e.g. '0,1,2' or '0-4'"
        ) from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise InvalidGrid(f"--bench-seeds: seed(s) {repeated} given more than once in {text!r}")
    return seeds
