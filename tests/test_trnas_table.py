"""NB201 as the benchmark defines it: the NATS table as reference on NB201's own splits, the
ImageNet16-120 loader, NB201's split files, and Table 3's top-k of the whole space.

Everything runs on small fake files the tests write themselves (no network): ImageNet16 pickles
whose first pixel marks each image's position, NB201 split files in NB201's config format, fake
CIFAR batches, and a fake ``nats_bench`` whose 200-epoch test accuracy and 12-epoch valid accuracy
rank the space in *opposite* orders, so reading the wrong one flips every correlation's sign.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest

from bench.contract.interface import CellFacts
from bench.contract.settings import TaskSettings
from bench.data import registry as data
from bench.data.nb201_splits import NB201_SPLITS
from bench.errors import DatasetNotFound, InvalidConfig
from bench.execute.runner import run_cell
from bench.registry import METHODS
from methods.trnas import rank as rank_mod
from methods.trnas import space
from methods.trnas.common import NATS_TSS, NatsTable, find_table, nats_dataset
from methods.trnas.rank import RankConfig, table_top_k
from tests.conftest import tiny_spec

DROPPED = 255  # marker of val images whose label is above 120 (ImageNet16-120 drops them)


# ----------------------------------------------------------------------------- fake files


def write_imagenet16(root, n_train=64, val_labels=(1, 5, 130, 2, 120, 121, 7, 3, 9, 4, 11, 6), seed=0):
    """``root/ImageNet16`` with 10 train batches and a val file; every image's pixel [0, 0, 0] marks it:
    train images 0..n_train-1 (mod 200), kept val images their position among the kept ones."""
    rng = np.random.default_rng(seed)
    folder = root / "ImageNet16"
    folder.mkdir(parents=True, exist_ok=True)
    per = n_train // 10
    for b in range(10):
        count = per if b < 9 else n_train - 9 * per
        data_ = rng.integers(0, 200, (count, 768), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(1, 131, count)]  # some above 120: filtered out
        with open(folder / f"train_data_batch_{b + 1}", "wb") as fh:
            pickle.dump({"data": data_, "labels": labels, "mean": np.zeros(768)}, fh)
    val = rng.integers(0, 200, (len(val_labels), 768), dtype=np.uint8)
    kept = 0
    for i, label in enumerate(val_labels):
        if label <= 120:
            val[i, 0] = kept
            kept += 1
        else:
            val[i, 0] = DROPPED
    with open(folder / "val_data", "wb") as fh:
        pickle.dump({"data": val, "labels": list(val_labels)}, fh)
    return kept


def write_split(root, dataset, halves, folder="nas-benchmark"):
    """NB201's split file for ``dataset`` (its config format) under ``root/folder``."""
    spec = NB201_SPLITS[dataset]
    where = root / folder if folder else root
    where.mkdir(parents=True, exist_ok=True)
    body = {key: ["int", [str(i) for i in idx]] for key, idx in zip(spec.keys, halves)}
    (where / spec.file).write_text(json.dumps(body, indent=1))
    return where / spec.file


def imagenet16_root(tmp_path):
    kept = write_imagenet16(tmp_path)
    xvalid, xtest = list(range(0, kept, 2)), list(range(1, kept, 2))
    write_split(tmp_path, "imagenet16-120", (xvalid, xtest))
    return xvalid, xtest


def markers(split):
    return sorted(int(v) for v in split.x[:, 0, 0, 0].tolist())


# ----------------------------------------------------------------------------- fake table


def table_test_acc(arch) -> float:
    """The fake table's 200-epoch test accuracy: rises with the architecture index."""
    return 10.0 + space.to_index(arch) / 200.0


def table_valid12_acc(arch) -> float:
    """The fake table's 12-epoch valid accuracy: the opposite order of ``table_test_acc``."""
    return 90.0 - space.to_index(arch) / 200.0


class FakeNats:
    """The part of NATS-Bench's topology api the harness uses (row index = gen_all index here)."""

    def __init__(self, path, fast_mode, seeds200=(777, 888, 999)):
        self.path, self.fast_mode, self.seeds200 = path, fast_mode, seeds200
        self.reads: list[tuple[int, str, str]] = []

    def query_index_by_arch(self, text):
        return space.to_index(space.parse(text))

    def get_more_info(self, index, dataset, hp, is_random):
        assert is_random is False  # the mean over the table's seeds
        arch = space.from_index(index)
        self.reads.append((index, dataset, hp))
        info = {"train-accuracy": 99.0, "test-accuracy": table_test_acc(arch) if hp == "200" else -1.0}
        if dataset != "cifar10":  # NB201 trains 'cifar10' on train + valid: no valid accuracy
            info["valid-accuracy"] = table_valid12_acc(arch) if hp == "12" else -2.0
        return info

    def query_meta_info_by_index(self, index, hp):
        seeds = self.seeds200 if hp == "200" else (111,)
        return types.SimpleNamespace(get_dataset_seeds=lambda dataset: list(seeds))


@pytest.fixture
def fake_nats(monkeypatch):
    """Install a fake ``nats_bench``; the list holds every api it created."""
    made: list[FakeNats] = []

    def create(path, kind, fast_mode, verbose):
        assert kind == "tss" and verbose is False
        api = FakeNats(path, fast_mode)
        made.append(api)
        return api

    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=create))
    return made


def place_table(root):
    (root / NATS_TSS).mkdir()
    return root / NATS_TSS


# ----------------------------------------------------------------------------- ImageNet16-120 loader


def test_imagenet16_keeps_labels_1_to_120_zero_based_and_the_val_file_order(tmp_path):
    kept = write_imagenet16(tmp_path)
    assert data.dataset_info("imagenet16-120").kind == "pickle" and data.list_datasets("pickle") == ["imagenet16-120"]
    assert data.check_available("imagenet16-120", tmp_path) is None
    train, val, test = data.load_splits("imagenet16-120", seed=0, input_size=16, val_frac=0.25, data_root=tmp_path)
    assert train.num_classes == 120 and train.x.dtype.is_floating_point is False
    assert tuple(train.x.shape[1:]) == (3, 16, 16)
    assert markers(test) == list(range(kept))  # the val file is the test part, filtered, in file order
    assert DROPPED not in markers(test)
    y = np.concatenate([train.y.numpy(), val.y.numpy(), test.y.numpy()])
    assert y.min() >= 0 and y.max() <= 119  # 1..120 made 0-based
    assert sorted(test.y.tolist()) == sorted(v - 1 for v in (1, 5, 2, 120, 7, 3, 9, 4, 11, 6))
    assert len(train) + len(val) < 64  # labels 121..130 of the train files were dropped too
    x, _ = test.batch(slice(0, 2))
    assert x.shape[-1] == 16 and x.dtype.is_floating_point


def test_imagenet16_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"--bench-data-root.*ImageNet16"):
        data.check_available("imagenet16-120", None)
    (tmp_path / "ImageNet16").mkdir()
    with pytest.raises(DatasetNotFound, match=r"missing: train_data_batch_1.*val_data.*image-net.org"):
        data.load_splits("imagenet16-120", seed=0, input_size=16, data_root=tmp_path)
    write_imagenet16(tmp_path / "bad")
    with open(tmp_path / "bad" / "ImageNet16" / "val_data", "wb") as fh:
        pickle.dump({"data": os.system, "labels": [1]}, fh)  # names a global that is no array part
    with pytest.raises(DatasetNotFound, match=r"val_data: not an ImageNet16 pickle \(global posix\.system"):
        data.load_splits("imagenet16-120", seed=0, input_size=16, data_root=tmp_path / "bad")


# ----------------------------------------------------------------------------- NB201 split files


def test_nb201_split_of_imagenet16_is_the_valid_and_test_halves_of_the_val_file(tmp_path):
    xvalid, xtest = imagenet16_root(tmp_path)
    train, val, test = data.load_splits("imagenet16-120", seed=3, input_size=16, data_root=tmp_path, split="nb201")
    assert markers(val) == xvalid and markers(test) == xtest
    full, _, _ = data.load_splits("imagenet16-120", seed=3, input_size=16, data_root=tmp_path, val_frac=0.2)
    assert len(train) > len(full)  # NB201 trains on the whole official train set (nothing carved out)
    again = data.load_splits("imagenet16-120", seed=7, input_size=16, data_root=tmp_path, split="nb201")
    assert markers(again[1]) == xvalid  # NB201's split does not depend on the seed
    limited, _, _ = data.load_splits(
        "imagenet16-120", seed=0, input_size=16, data_root=tmp_path, split="nb201", train_limit=10
    )
    assert len(limited) == 10


def _write_cifar(root, name, n_train, n_test, classes):
    """Fake torchvision CIFAR batches whose pixel [0, 0, 0] is the image's index mod 250."""
    rng = np.random.default_rng(1)

    def batch(n, start, label_key):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        x[:, 0] = (np.arange(start, start + n) % 250).astype(np.uint8)
        return {"data": x, label_key: [int(v) for v in rng.integers(0, classes, n)]}

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        per = n_train // 5
        for b in range(5):
            (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch(per, b * per, "labels")))
        (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, 0, "labels")))
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir()
        (folder / "train").write_bytes(pickle.dumps(batch(n_train, 0, "fine_labels")))
        (folder / "test").write_bytes(pickle.dumps(batch(n_test, 0, "fine_labels")))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks CIFAR's md5 sums; the fake batches only need to exist."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_nb201_split_of_cifar10_is_the_train_valid_halves_of_the_train_set(tmp_path, no_md5):
    _write_cifar(tmp_path, "cifar10", n_train=40, n_test=12, classes=10)
    rng = np.random.default_rng(0)
    order = rng.permutation(40)
    write_split(tmp_path, "cifar10", (sorted(order[:20]), sorted(order[20:])), folder="")  # directly in data_root
    train, val, test = data.load_splits("cifar10", seed=0, input_size=32, data_root=tmp_path, split="nb201")
    assert markers(train) == sorted(order[:20].tolist()) and markers(val) == sorted(order[20:].tolist())
    assert markers(test) == list(range(12))  # the official test set, whole
    assert data.train_images("cifar10", TaskSettings(split="nb201")) == 25_000


def test_nb201_split_of_cifar100_halves_the_official_test_set(tmp_path, no_md5):
    _write_cifar(tmp_path, "cifar100", n_train=30, n_test=16, classes=100)
    write_split(tmp_path, "cifar100", (list(range(0, 16, 2)), list(range(1, 16, 2))))
    train, val, test = data.load_splits("cifar100", seed=0, input_size=32, data_root=tmp_path, split="nb201")
    assert len(train) == 30 and markers(val) == list(range(0, 16, 2)) and markers(test) == list(range(1, 16, 2))
    assert data.train_images("cifar100", TaskSettings(split="nb201", train_limit=100)) == 100


def test_a_missing_or_malformed_split_file_is_named_with_where_to_get_it(tmp_path, no_md5):
    write_imagenet16(tmp_path)
    with pytest.raises(DatasetNotFound, match=r"imagenet-16-120-test-split.txt.*configs/nas-benchmark.*AutoDL"):
        data.load_splits("imagenet16-120", seed=0, input_size=16, data_root=tmp_path, split="nb201")
    path = write_split(tmp_path, "imagenet16-120", ([0, 1, 2], [2, 3]))
    with pytest.raises(DatasetNotFound, match=r"imagenet-16-120-test-split.txt.*overlap"):
        data.load_splits("imagenet16-120", seed=0, input_size=16, data_root=tmp_path, split="nb201")
    write_split(tmp_path, "imagenet16-120", ([0, 1], [2, 999]))
    with pytest.raises(DatasetNotFound, match=r"'xtest' indexes 2..999.*has 10 images"):
        data.load_splits("imagenet16-120", seed=0, input_size=16, data_root=tmp_path, split="nb201")
    path.write_text(json.dumps({"train": ["int", ["0"]]}))
    with pytest.raises(DatasetNotFound, match=r"expected the key 'xvalid'"):
        data.load_splits("imagenet16-120", seed=0, input_size=16, data_root=tmp_path, split="nb201")
    with pytest.raises(DatasetNotFound, match=r"defined for cifar10, cifar100, imagenet16-120 only"):
        data.load_splits("uci-digits", seed=0, input_size=8, split="nb201")
    with pytest.raises(InvalidConfig, match="split must be one of harness, nb201"):
        TaskSettings(split="nb-201")


# ----------------------------------------------------------------------------- the table


def test_table_reads_the_200_epoch_test_mean_and_names_its_seeds(tmp_path, fake_nats):
    place_table(tmp_path)
    task = types.SimpleNamespace(dataset="imagenet16-120", data_root=str(tmp_path))
    table = find_table(task, "", "")
    assert table is not None and fake_nats[0].path == str(tmp_path / NATS_TSS) and fake_nats[0].fast_mode
    arch = space.from_index(1234)
    assert table.test_accuracy(arch) == pytest.approx(table_test_acc(arch))
    assert table.valid_accuracy(arch) == pytest.approx(table_valid12_acc(arch))
    assert table.kind([arch]) == "nats-200ep-mean-seeds(777,888,999)"
    assert find_table(types.SimpleNamespace(dataset="uci-digits", data_root=str(tmp_path)), "", "") is None
    assert find_table(types.SimpleNamespace(dataset="cifar10", data_root=None), "", "") is None
    with pytest.raises(InvalidConfig, match=r"reference='nats' needs a NATS-Bench table.*NATS-tss-v1_0-3ffb9-simple"):
        find_table(types.SimpleNamespace(dataset="cifar10", data_root=str(tmp_path / "none")), "", "", required=True)
    with pytest.raises(InvalidConfig, match=r"nats_dataset='cifar100' does not hold 'cifar10'"):
        nats_dataset("cifar10", "cifar100")
    plain = NatsTable(str(tmp_path / NATS_TSS), "cifar10")
    with pytest.raises(InvalidConfig, match=r"no valid-accuracy for cifar10.*cifar10-valid"):
        plain.valid_accuracy(arch)


@pytest.mark.parametrize("unique", [False, True])
def test_top_k_is_the_k_best_of_the_whole_space_by_the_table(tmp_path, fake_nats, unique):
    place_table(tmp_path)
    table = NatsTable(str(tmp_path / NATS_TSS), "ImageNet16-120")
    top = table_top_k(table, 7, "unique" if unique else "all")
    if not unique:
        assert top == [space.from_index(space.SPACE_SIZE - 1 - i) for i in range(7)]  # test acc rises with index
    else:
        keys = [space.canonical(a) for a in top]
        assert len(set(keys)) == 7
        firsts = {}
        for a in space.all_archs():
            firsts.setdefault(space.canonical(a), a)
        assert all(firsts[k] == a for k, a in zip(keys, top))  # each class by its lowest-index member
        assert [table_test_acc(a) for a in top] == sorted((table_test_acc(a) for a in top), reverse=True)
    reads = len(fake_nats[0].reads)
    NatsTable(str(tmp_path / NATS_TSS), "ImageNet16-120").whole_space()
    assert len(fake_nats[-1].reads) == 0 and reads >= space.SPACE_SIZE  # the second read is the cache's


# ----------------------------------------------------------------------------- end to end


def _spy(monkeypatch):
    """Record (stage, val-split markers) of every candidate training the rank method runs."""
    seen: list[tuple[str, list[int]]] = []
    real = rank_mod.train_candidate

    def spy(net, arch, train, val, cfg, seed, stage, *, rec):
        seen.append((stage, markers(val)))
        return real(net, arch, train, val, cfg, seed, stage, rec=rec)

    monkeypatch.setattr(rank_mod, "train_candidate", spy)
    return seen


RANK = {"archs": 5, "top_k": 4, "sample_top_k": 3, "N": 1, "bootstrap": 0, "transfer.enabled": False}


def _cell(tmp_path, config, task=None):
    spec = tiny_spec(
        "trnas_rank", dataset="imagenet16-120", config={**RANK, **config}, task={"split": "nb201", **(task or {})}
    )
    return run_cell(dataclasses.replace(spec, data_root=str(tmp_path)))


def _series(result, name):
    return [v for _, v in sorted(result.series[name])]


def test_table_end_to_end_original_from_table_on_nb201_valid(tmp_path, fake_nats, monkeypatch):
    """Original read from the table (12-epoch valid) against the table's 200-epoch test, found at the
    tier's default path: valid and test rank the space oppositely, so both correlations are -1."""
    imagenet16_root(tmp_path)
    place_table(tmp_path)
    seen = _spy(monkeypatch)
    result = _cell(tmp_path, {"proxy_from_table": True})
    assert result.ok, result.error
    assert seen == []  # nothing trained: no proxy (the table's) and no reference (the table's)
    archs = [space.parse(a) for a in result.info["archs"]]
    assert _series(result, "rank_reference_top1_pct") == pytest.approx([table_test_acc(a) for a in archs])
    assert _series(result, "rank_proxy_val_top1_pct") == pytest.approx([table_valid12_acc(a) for a in archs])
    assert result.metrics["krocc_tau"] == pytest.approx(-1.0) and result.metrics["srocc_rho"] == pytest.approx(-1.0)
    top = [space.from_index(space.SPACE_SIZE - 1 - i) for i in range(4)]
    assert result.info["topk_archs"] == [space.format_arch(a) for a in top]
    assert _series(result, "rank_topk_reference_top1_pct") == pytest.approx([table_test_acc(a) for a in top])
    assert result.metrics["krocc_topk_tau"] == pytest.approx(-1.0) and result.metrics["topk_archs_count"] == 4
    assert result.info["topk_source"].startswith("top-4 of the whole space (15625 architectures")
    assert result.info["reference_kind"] == "nats-200ep-mean-seeds(777,888,999)"
    assert result.info["split_policy"] == "nb201" and result.metrics["reference_table_bool"] == 1.0
    assert result.metrics["reference_seeds_min_count"] == 3.0
    assert {(d, hp) for _, d, hp in fake_nats[0].reads} == {("ImageNet16-120", "12"), ("ImageNet16-120", "200")}


def test_table_end_to_end_tr_net_trains_on_nb201_train_and_scores_on_nb201_valid(tmp_path, fake_nats, monkeypatch):
    """Tr-Net proxies (the sample and the table's top-k) score on NB201's valid half, the split the
    table's valid accuracy (Original's proxy) is on; the reference stays the table's test accuracy."""
    xvalid, xtest = imagenet16_root(tmp_path)
    place_table(tmp_path)
    seen = _spy(monkeypatch)
    cfg = {"transfer.enabled": True, "transfer.i": 1, "transfer.j": 3, "proxy.steps": 2}
    result = _cell(tmp_path, cfg)
    assert result.ok, result.error
    stages = [s for s, _ in seen]
    assert stages.count("proxy") == 5 and stages.count("topk_proxy") == 4 - result.metrics["topk_proxy_reused_count"]
    assert all(m == xvalid for _, m in seen)  # every proxy scored on NB201's valid half, never its test half
    assert "reference" not in stages  # the table is the reference: no harness training
    archs = [space.parse(a) for a in result.info["archs"]]
    assert _series(result, "rank_reference_top1_pct") == pytest.approx([table_test_acc(a) for a in archs])
    assert len(_series(result, "rank_topk_proxy_val_top1_pct")) == 4
    assert "krocc_topk_tau" in result.metrics or "krocc_topk_degenerate" in result.info


def test_without_a_table_the_harness_reference_is_named_and_scored_on_nb201_test(tmp_path, monkeypatch):
    xvalid, xtest = imagenet16_root(tmp_path)
    seen = _spy(monkeypatch)
    result = _cell(tmp_path, {})
    assert result.ok, result.error
    assert {s for s, _ in seen} == {"proxy", "reference"}
    assert all(m == (xvalid if s == "proxy" else xtest) for s, m in seen)
    assert result.info["reference_kind"] == "harness-4steps" and result.metrics["reference_table_bool"] == 0.0
    assert result.info["topk_source"] == "top-3 of a random sample of 5 by the harness reference (harness-4steps)"
    assert result.metrics["topk_archs_count"] == 3 and "rank_topk_reference_top1_pct" not in result.series


def test_a_table_with_the_harness_split_is_refused(tmp_path, fake_nats):
    write_imagenet16(tmp_path)
    place_table(tmp_path)
    result = _cell(tmp_path, {}, task={"split": "harness"})
    assert result.status == "failed" and result.error_type == "InvalidConfig"
    assert "split='nb201'" in result.error and NATS_TSS in result.error
    cls = METHODS.get("trnas_rank")
    facts = CellFacts("imagenet16-120", "resnet32", TaskSettings(), 100_000)
    with pytest.raises(InvalidConfig, match="split='nb201'"):
        cls.check_cell(RankConfig(nats_path=str(tmp_path / NATS_TSS)), facts)
    cls.check_cell(RankConfig(), facts)  # 'auto' without nats_path: decided where the data root is known
    with pytest.raises(InvalidConfig, match="nats_path is set but reference='harness'"):
        RankConfig(reference="harness", nats_path="x")
    with pytest.raises(InvalidConfig, match=r"sample_top_k .* 3..archs=10"):
        RankConfig(archs=10, sample_top_k=11)
