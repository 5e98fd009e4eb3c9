"""Grids expand into validated cells; bad grids fail with messages that list what is valid."""

import pytest

from bench.errors import InvalidGrid
from bench.execute.grid import Grid, TierPlan, parse_seeds

BASE = dict(
    suite="s",
    methods={"full_ft": {}, "last_k:k1": {"k": 1}},
    datasets=("uci-digits", "lfw-faces"),
    models=("resnet20",),
    seeds=(0, 1),
    task={"source": "mnist5k"},
    tiers={"smoke": TierPlan(task={"width": 0.25}, config={"train.steps": 5})},
)


def grid(**kw):
    return Grid(**{**BASE, **kw})


def test_expands_every_cell_with_readable_ids():
    cells = grid().cells("smoke")
    assert len(cells) == 2 * 2 * 2
    ids = [c.test_id for c in cells]
    assert "last_k:k1-uci-digits-resnet20-s1" in ids and "full_ft-lfw-faces-resnet20-s0" in ids
    k1 = next(c for c in cells if c.variant == "last_k:k1")
    assert k1.method == "last_k" and k1.config["k"] == 1 and k1.config["train"]["steps"] == 5
    assert k1.task_settings["width"] == 0.25 and k1.task_settings["source"] == "mnist5k"
    assert len({c.cell_key for c in cells}) == 8


def test_cells_come_seed_major_so_contiguous_chunks_share_a_seeds_caches():
    cells = grid().cells("smoke")
    seeds = [c.seed for c in cells]
    assert seeds == sorted(seeds) and seeds[0] != seeds[-1]
    first = [c.test_id for c in cells if c.seed == seeds[0]]
    assert first == [c.replace("-s1", "-s0") for c in (x.test_id for x in cells if x.seed == seeds[-1])]


def test_seed_override_and_keys_stable():
    a = grid().cells("smoke", seeds=[3])
    b = grid().cells("smoke", seeds=[3], threads=4, device="cpu")
    assert [c.seed for c in a] == [3] * 4
    assert [c.cell_key for c in a] == [c.cell_key for c in b]


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(methods={"fulft": {}}), r"unknown method 'fulft'\. Did you mean 'full_ft'\?"),
        (dict(datasets=("uci-digit",)), r"unknown dataset 'uci-digit'.*Valid datasets: .*uci-digits"),
        (dict(models=("resnet19",)), r"unknown model 'resnet19'.*Valid models: .*resnet18"),
        (
            dict(methods={"last_k": {"kk": 1}}),
            r"unknown config key\(s\) kk for LastKConfig; valid keys: k, scope, train, target_top1_pct",
        ),
        (dict(methods={"full_ft": {"train.lr": -1.0}}), r"lr must be > 0"),
        (dict(seeds=()), r"seeds must be a non-empty list"),
        (dict(task={"source": "mnist5k"}, datasets=("mnist5k",)), r"'mnist5k' is both the source and a target"),
        (dict(task={"source": "imagenet"}), r"model 'resnet20' has no ImageNet weights"),
        (dict(task={"source": "svhn"}), r"unknown source 'svhn'; valid sources: imagenet, .*mnist5k"),
        (dict(datasets=("cifar10",)), r"pass --bench-data-root"),
        (dict(task={"widht": 1.0}), r"unknown config key\(s\) widht for TaskSettings"),
    ],
)
def test_bad_grids(kw, msg):
    with pytest.raises(InvalidGrid, match=msg):
        grid(**kw).cells("smoke")


def test_missing_tier_and_unknown_tier():
    with pytest.raises(InvalidGrid, match="defines no settings for tier 'paper'; it defines: smoke"):
        grid().cells("paper")
    with pytest.raises(InvalidGrid, match="unknown tier 'huge'; valid tiers: smoke, cpu, short, paper"):
        grid().cells("huge")


def test_missing_torchvision_folder_named(tmp_path):
    with pytest.raises(InvalidGrid, match=str(tmp_path / "cifar-10-batches-py")):
        grid(datasets=("cifar10",)).cells("smoke", data_root=str(tmp_path))


def test_imagenet_needs_full_width():
    g = grid(models=("resnet18",), task={"source": "imagenet"})
    with pytest.raises(InvalidGrid, match="ImageNet weights need width 1.0, not 0.25"):
        g.cells("smoke")


def test_fashion_mnist_is_a_source_checked_at_collection(tmp_path, monkeypatch):
    import dataclasses

    from bench.data import idx_sets

    with pytest.raises(InvalidGrid, match=r"unknown source 'cifar10'; valid sources: imagenet, .*fashion-mnist"):
        grid(task={"source": "cifar10"}).cells("smoke")
    nowhere = str(tmp_path / "no-system-copy")
    spec = dataclasses.replace(idx_sets.IDX_SETS["fashion-mnist"], system_dir=nowhere)
    monkeypatch.setitem(idx_sets.IDX_SETS, "fashion-mnist", spec)
    with pytest.raises(InvalidGrid, match=r"apt-get install dataset-fashion-mnist"):
        grid(task={"source": "fashion-mnist"}).cells("smoke", data_root=str(tmp_path))
    (tmp_path / "fashion-mnist").mkdir()
    for name in idx_sets.FILES.values():
        (tmp_path / "fashion-mnist" / name).touch()  # collection only checks that the files exist
    cells = grid(task={"source": "fashion-mnist"}).cells("smoke", data_root=str(tmp_path))
    assert {c.task_settings["source"] for c in cells} == {"fashion-mnist"}


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("7") == [7]
    with pytest.raises(InvalidGrid, match="cannot parse 'a'"):
        parse_seeds("a")


def test_tier_can_name_its_own_datasets(tmp_path):
    g = grid(
        tiers={
            "smoke": TierPlan(config={"train.steps": 5}),
            "paper": TierPlan(datasets=("cifar10",), task={"source": "mnist5k"}),
        }
    )
    assert {c.dataset for c in g.cells("smoke")} == {"uci-digits", "lfw-faces"}
    with pytest.raises(InvalidGrid, match=str(tmp_path / "cifar-10-batches-py")):
        g.cells("paper", data_root=str(tmp_path))


def test_dataset_task_overrides_one_dataset_only():
    g = grid(
        tiers={"smoke": TierPlan(task={"width": 0.25, "input_size": 8}, dataset_task={"lfw-faces": {"input_size": 24}})}
    )
    sizes = {(c.dataset, c.seed): c.task_settings["input_size"] for c in g.cells("smoke")}
    assert sizes == {("uci-digits", 0): 8, ("uci-digits", 1): 8, ("lfw-faces", 0): 24, ("lfw-faces", 1): 24}
    assert {c.task_settings["width"] for c in g.cells("smoke")} == {0.25}
    bad = grid(tiers={"smoke": TierPlan(dataset_task={"cifar10": {"input_size": 32}})})
    with pytest.raises(InvalidGrid, match=r"task overrides for datasets \['cifar10'\] which the tier does not run"):
        bad.cells("smoke")


def test_only_datasets_filters_the_tier_and_names_unknown_ones(tmp_path):
    g = grid(
        tiers={
            "smoke": TierPlan(dataset_task={"lfw-faces": {"input_size": 24}}),
            "paper": TierPlan(datasets=("cifar10", "lfw-faces")),
        }
    )
    assert {c.dataset for c in g.cells("smoke", only_datasets=["lfw-faces"])} == {"lfw-faces"}
    # cifar10 is not on disk, but the filtered paper tier never asks for it
    assert {c.dataset for c in g.cells("paper", only_datasets=["lfw-faces"], data_root=str(tmp_path))} == {"lfw-faces"}
    with pytest.raises(InvalidGrid, match=r"runs no dataset mnist5k; its datasets: uci-digits, lfw-faces"):
        g.cells("smoke", only_datasets=["mnist5k"])


def test_tier_can_skip_method_entries():
    g = grid(tiers={"smoke": TierPlan(skip_methods=("last_k:k1",)), "short": TierPlan()})
    assert {c.variant for c in g.cells("smoke")} == {"full_ft"}
    assert {c.variant for c in g.cells("short")} == {"full_ft", "last_k:k1"}
    with pytest.raises(InvalidGrid, match=r"the tier skips \['last_k:k2'\] which are not method entries"):
        grid(tiers={"smoke": TierPlan(skip_methods=("last_k:k2",))}).cells("smoke")
    with pytest.raises(InvalidGrid, match="the tier skips every method entry"):
        grid(tiers={"smoke": TierPlan(skip_methods=("full_ft", "last_k:k1"))}).cells("smoke")
