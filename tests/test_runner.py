"""run_cell: metrics of an ok cell, failures as results, bad input as errors, determinism."""

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from bench import engine
from bench.contract.interface import Fitted
from bench.errors import InvalidConfig, UnknownName
from bench.execute.runner import run_cell
from tests.conftest import tiny_spec

CORE = (
    "val_top1_pct",
    "test_top1_pct",
    "val_loss_nat",
    "test_loss_nat",
    "trainable_params",
    "total_params",
    "step_ms_median",
    "step_ms_p10",
    "step_ms_p90",
    "counted_mem_mib",
    "peak_rss_mib",
    "fit_s",
    "eval_s",
    "data_s",
    "train_step_gflop",
    "infer_mflop_per_sample",
    "source_test_top1_pct",
    "source_s",
)


@pytest.fixture(scope="module")
def ok_result():
    return run_cell(tiny_spec("last_k", config={"k": 1}))


def test_ok_cell_has_core_metrics(ok_result):
    r = ok_result
    assert r.status == "ok" and r.error == "" and r.device == "cpu"
    missing = [k for k in CORE if k not in r.metrics]
    assert not missing, missing
    assert "peak_mem_mib" not in r.metrics  # CPU: RSS growth is no memory figure (counted_mem_mib is)
    assert 0 <= r.metrics["test_top1_pct"] <= 100 and r.metrics["step_ms_median"] > 0
    assert r.metrics["trainable_params"] < r.metrics["total_params"]
    assert r.arch == "resnet20(num_classes=10,shortcut='A',width=0.125)"
    assert [s for s, _ in r.series["train_loss_nat"]] == [3, 6]
    assert r.info["batch_size"] == 32 and r.info["source"]["source"] == "mnist5k"
    assert r.wall_s > 0 and r.started_at < r.ended_at


def test_result_json_round_trip(ok_result):
    from bench.contract.cell import CellResult

    back = CellResult.from_json(ok_result.to_json())
    assert back.spec == ok_result.spec and back.metrics == ok_result.metrics and back.series == ok_result.series


def test_same_seed_identical_accuracy(ok_result):
    again = run_cell(ok_result.spec)
    assert again.metrics["test_top1_pct"] == ok_result.metrics["test_top1_pct"]
    assert again.metrics["val_loss_nat"] == ok_result.metrics["val_loss_nat"]
    assert again.series["train_loss_nat"] == ok_result.series["train_loss_nat"]
    assert "pretrain_s" not in again.metrics  # the source came from the cache this time


@dataclass(frozen=True)
class NoConfig:
    train: engine.TrainConfig = field(default_factory=lambda: engine.TrainConfig(steps=4, batch_size=16, log_every=2))


class Raises:
    Config = NoConfig

    def __init__(self, config):
        self.config = config

    def fit(self, task, rec):
        rec.scalar("half_done_pct", 50.0)
        raise ValueError("broken on purpose")

    def evaluate(self, fitted, split):
        return {}


class NanLoss(Raises):
    def fit(self, task, rec):
        model = task.build_model(pretrained=False)
        hooks = engine.StepHooks(loss_fn=lambda m, x, y: F.cross_entropy(m(x), y) * float("nan"))
        engine.fit(model, task.train, self.config.train, rec, hooks=hooks)
        return Fitted(model, "x")


class Oom(Raises):
    def fit(self, task, rec):
        rec.note("batch_size", 512)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class BadEval(Raises):
    def fit(self, task, rec):
        return Fitted(task.build_model(pretrained=False), "x")

    def evaluate(self, fitted, split):
        return {"top1_pct": 1.0}


def test_exception_becomes_failed_row(register_temp):
    register_temp("raises", Raises)
    r = run_cell(tiny_spec("raises"))
    assert r.status == "failed" and r.error_type == "ValueError"
    assert r.error.startswith("broken on purpose (at ") and "test_runner.py" in r.error and "in fit" in r.error
    assert r.metrics["half_done_pct"] == 50.0 and "fit_s" in r.metrics


def test_nan_loss_becomes_diverged(register_temp):
    register_temp("nan_loss", NanLoss)
    r = run_cell(tiny_spec("nan_loss"))
    assert r.status == "diverged" and r.error_type == "Diverged"
    assert "non-finite loss nan at step 0" in r.error


def test_oom_becomes_oom_row_with_batch_size(register_temp):
    register_temp("oom", Oom)
    r = run_cell(tiny_spec("oom"))
    assert r.status == "oom" and "batch size 512" in r.error


def test_missing_eval_keys_fail(register_temp):
    register_temp("bad_eval", BadEval)
    r = run_cell(tiny_spec("bad_eval"))
    assert r.status == "failed" and "did not return ['loss_nat']" in r.error


def test_bad_input_raises_before_running():
    spec = tiny_spec("last_k")
    import dataclasses

    with pytest.raises(InvalidConfig, match="unknown config key"):
        run_cell(dataclasses.replace(spec, config_json='{"kk": 1}'))
    with pytest.raises(UnknownName, match="unknown method 'nope'"):
        run_cell(dataclasses.replace(spec, method="nope"))


def test_unknown_dataset_is_a_failed_row_naming_valid_ones():
    import dataclasses

    r = run_cell(dataclasses.replace(tiny_spec("full_ft"), dataset="svhn"))
    assert r.status == "failed" and r.error_type == "UnknownName" and "uci-digits" in r.error


class ProbeSource(Raises):
    """Records whether the task's source checkpoint is already cached when ``fit`` starts."""

    def fit(self, task, rec):
        from bench.models.pretrain import pretrained_source

        s = task.settings
        _, meta = pretrained_source(task.model, s.width, s.source, s.input_size, s.pretrain, s.source_seed, task.device)
        rec.note("cached_before_fit", meta["cache_hit"])
        model = task.build_model()
        engine.fit(model, task.train, self.config.train, rec)
        return Fitted(model, model.arch_string())

    def evaluate(self, fitted, split):
        return engine.evaluate(fitted.model, split)


def test_pretraining_is_its_own_stage_not_fit(register_temp):
    register_temp("probe_source", ProbeSource)
    r = run_cell(tiny_spec("probe_source", task={"source_seed": 7}))  # a source no other test uses: cold cache
    assert r.status == "ok", r.error
    assert r.info["cached_before_fit"] is True  # pretrained in the 'source' stage, before fit started
    assert r.metrics["pretrain_s"] > 0 and r.metrics["source_s"] >= r.metrics["pretrain_s"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA")
def test_missing_device_is_a_skipped_row():
    import dataclasses

    r = run_cell(dataclasses.replace(tiny_spec("full_ft"), device="cuda"))
    assert r.status == "skipped" and r.error_type == "DeviceUnavailable" and "CUDA is not available" in r.error
    assert r.metrics == {}
