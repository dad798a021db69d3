"""`adapt export --onnx [--int8]` and `adapt predict` on the ONNX folder, on tiny trained runs: the fp32 graph
reproduces the run's own probabilities, int8 stays close, the folder has optimum's layout, a LoRA run is merged,
and a failed export (bad run, missing packages, a crash mid-way) writes nothing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import train_tiny
from test_predict_export import (
    LABELS,
    assert_matches_run,
    fail,
    predict_file,
    probs_of,
    read_jsonl,
    write_jsonl,
)

from adapt.export import main as export_main

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime")),
    reason="onnx / onnxruntime not installed (pip install 'adapt[onnx]'; the test extra installs them)")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    return train_tiny(tmp_path_factory.mktemp("full"), tiny_model_dir, tiny_data, [])


@pytest.fixture(scope="module")
def rows(tiny_data) -> list[dict]:
    return read_jsonl(tiny_data["source_test"]) + read_jsonl(tiny_data["target_test"])


def exported(run: Path, out: Path, *flags: str) -> Path:
    assert export_main([str(run), "--out", str(out), "--onnx", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def onnx_fp32(full_run, tmp_path_factory) -> Path:
    return exported(full_run, tmp_path_factory.mktemp("onnx") / "fp32")


@pytest.fixture(scope="module")
def onnx_int8(full_run, tmp_path_factory) -> Path:
    return exported(full_run, tmp_path_factory.mktemp("onnx") / "int8", "--int8")


def info_of(folder: Path) -> dict:
    return json.loads((folder / "adapt_export.json").read_text())


def test_fp32_export_reproduces_the_runs_probabilities(full_run, onnx_fp32, rows, tmp_path):
    info = info_of(onnx_fp32)
    assert info["int8"] is False and info["quantization"] is None and info["weights"] == ["model.onnx"]
    assert info["data"] == {"max_length": 32, "truncation": "head", "normalize": "none"}
    # The optimizer fused the encoder into onnxruntime's single ops: the speed comes from these.
    assert {"Attention", "SkipLayerNormalization"} <= set(info["onnx"]["fused_ops"])
    out = predict_file(onnx_fp32, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path)
    assert_matches_run(out, full_run, rows, tol=1e-4)


def test_folder_has_optimums_layout(onnx_fp32):
    """What `ORTModelForSequenceClassification.from_pretrained(DIR)` reads: one model.onnx whose inputs are the
    tokenizer's outputs with free batch and length, its output `logits`; config.json with the labels; the
    tokenizer. Nothing else is left in the folder (no scratch files)."""
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    names = sorted(p.name for p in onnx_fp32.iterdir())
    assert names == ["adapt_export.json", "config.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"]
    session = ort.InferenceSession(str(onnx_fp32 / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in session.get_inputs()} == {
        n: ["batch_size", "sequence_length"] for n in ("input_ids", "attention_mask", "token_type_ids")}
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert AutoConfig.from_pretrained(onnx_fp32).id2label == dict(enumerate(LABELS))
    assert AutoTokenizer.from_pretrained(onnx_fp32)("sturdy pan")["input_ids"].count(1) == 0  # 1 = [UNK]


def test_optimum_loads_the_folder(onnx_fp32, full_run, rows):
    ort_model = pytest.importorskip(
        "optimum.onnxruntime", reason="optimum-onnx is not installed (0.1.0 needs transformers < 4.58)",
        exc_type=ImportError)
    from transformers import AutoTokenizer

    model = ort_model.ORTModelForSequenceClassification.from_pretrained(onnx_fp32)
    enc = AutoTokenizer.from_pretrained(onnx_fp32)([r["text"] for r in rows], padding=True, return_tensors="pt")
    assert model(**enc).logits.shape == (len(rows), len(LABELS))


def ops_of(folder: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}


def test_int8_export_is_smaller_and_close_to_fp32(onnx_fp32, onnx_int8, rows, tmp_path):
    from adapt.serving.onnx import int8_settings

    info = info_of(onnx_int8)
    assert info["int8"] is True and info["quantization"] == int8_settings()  # chosen by this CPU's flags
    assert info["weights_bytes"] < info_of(onnx_fp32)["weights_bytes"]
    assert {"QAttention", "DynamicQuantizeLinear"} <= ops_of(onnx_int8) and "QAttention" not in ops_of(onnx_fp32)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    fp32 = probs_of(predict_file(onnx_fp32, path, tmp_path))
    int8 = probs_of(predict_file(onnx_int8, path, tmp_path))
    assert np.abs(int8 - fp32).max() < 0.1
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.9


def test_int8_settings_follow_the_cpu_flags():
    vnni = {"avx2", "avx512f", "avx512_vnni"}
    assert int8_settings_of(vnni)[:2] == ("avx512_vnni", "QInt8")
    assert int8_settings_of({"avx2", "avx_vnni"})[:2] == ("avx512_vnni", "QInt8")
    # Plain AVX2: unsigned weights, so onnxruntime's u8s8 kernel cannot saturate.
    assert int8_settings_of({"avx2", "fma"}) == ("avx2", "QUInt8", "AutoQuantizationConfig.avx2(is_static=False, "
                                                 "per_channel=True)")


def int8_settings_of(flags: set[str]) -> tuple[str, str, str]:
    from adapt.serving.onnx import int8_settings

    s = int8_settings(flags)
    return s["isa"], s["weight_type"], s["optimum_equivalent"]


def test_lora_run_exports_merged(tiny_model_dir, tiny_data, rows, tmp_path_factory, tmp_path):
    run = train_tiny(tmp_path_factory.mktemp("lora"), tiny_model_dir, tiny_data,
                     ["model.finetune=lora", "train.epochs=20", "train.lr=1e-2"])
    out = exported(run, tmp_path / "onnx")
    assert info_of(out)["adapter_merged"] == "lora"
    assert_matches_run(predict_file(out, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path), run, rows, tol=1e-4)


def test_a_bare_onnx_folder_is_served_too(full_run, onnx_fp32, rows, tmp_path):
    """A folder optimum wrote has no adapt_export.json: it is still served (with `--max-length` given)."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(onnx_fp32, bare)
    (bare / "adapt_export.json").unlink()
    out = predict_file(bare, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path, "--max-length", "32")
    assert_matches_run(out, full_run, rows, tol=1e-4)


def test_failed_exports_write_nothing(full_run, onnx_fp32, tmp_path, capsys, monkeypatch):
    out = tmp_path / "exp"
    assert "holds no model" in fail(export_main, [str(tmp_path), "--out", str(out), "--onnx"], capsys)
    err = fail(export_main, [str(onnx_fp32), "--out", str(out), "--onnx"], capsys)
    assert "already an ONNX export; export from the run" in err

    import adapt.serving.onnx as onnx_mod

    def crash(*args, **kwargs):
        raise onnx_mod.AdaptError("optimizer crashed")

    monkeypatch.setattr(onnx_mod, "_optimize", crash)  # after the graph is written, before it is complete
    assert "optimizer crashed" in fail(export_main, [str(full_run), "--out", str(out), "--onnx"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the folder nor its staging copy


def test_missing_packages_name_the_install_command(full_run, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    out = tmp_path / "exp"
    err = fail(export_main, [str(full_run), "--out", str(out), "--onnx", "--int8"], capsys)
    assert "need onnxruntime" in err and "pip install 'adapt[onnx]'" in err
    assert not out.exists()


@pytest.mark.parametrize("family", ["distilbert", "deberta-v2"])  # no token types; relative-position attention
def test_other_families_export_with_free_batch_and_length(family, tmp_path):
    """The graph is traced on a 2 x 8 dummy batch; it must give torch's logits at other shapes too (no size
    frozen into it), for encoders whose inputs and attention differ from BERT's."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adapt.serving.onnx import OnnxClassifier, save_onnx

    families = pytest.importorskip("families", reason="tests/families.py (the tiny model families) is absent")
    folder = families.build_family(family, tmp_path / "model")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    enc = AutoTokenizer.from_pretrained(folder)(["the cat sat on the mat and the dog sat on the cat", "a dog", "cat"],
                                                padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits.numpy()
    (tmp_path / "onnx").mkdir()
    save_onnx(model, tmp_path / "onnx", int8=False)
    got = OnnxClassifier(tmp_path / "onnx" / "model.onnx").logits(dict(enc))
    assert enc["input_ids"].shape[1] != 8 and np.abs(got - expected).max() < 1e-5
