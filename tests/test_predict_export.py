"""`adapt.predict` and `adapt.export` on tiny trained runs: the predictions agree with what the run itself wrote,
in input order, for every input format, for full and LoRA models, fp32 and int8 exports; bad input is refused."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny

from adapt.export import main as export_main
from adapt.predict import main as predict_main
from adapt.serving.inference import load_for_inference, predict_texts

LABELS = ["negative", "positive"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    return train_tiny(tmp_path_factory.mktemp("full"), tiny_model_dir, tiny_data, [])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    # LoRA learns slower: more epochs at a higher rate, so its predictions are confident enough to compare.
    return train_tiny(tmp_path_factory.mktemp("lora"), tiny_model_dir, tiny_data,
                      ["model.finetune=lora", "train.epochs=20", "train.lr=1e-2"])


@pytest.fixture(scope="module")
def test_rows(tiny_data) -> list[dict]:
    """Both test splits: the run learns the source domain, so its source predictions are confident and varied."""
    return read_jsonl(tiny_data["source_test"]) + read_jsonl(tiny_data["target_test"])


def run_probs(run_dir: Path, rows: list[dict]) -> np.ndarray:
    """What the run itself wrote for `rows` (predictions files keep probs as a list in label order)."""
    by_id = {p["id"]: p for split in ("source_test", "target_test")
             for p in read_jsonl(run_dir / "predictions" / f"{split}.jsonl")}
    return np.array([by_id[r["id"]]["probs"] for r in rows])


def probs_of(out: list[dict]) -> np.ndarray:
    assert all(list(o["probs"]) == LABELS for o in out)  # every label, in label order
    return np.array([[o["probs"][n] for n in LABELS] for o in out])


def predict(argv: list[str], capsys) -> list[dict]:
    assert predict_main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def predict_file(run_dir: Path, input_path: Path, tmp_path: Path, *extra: str) -> list[dict]:
    out = tmp_path / "out" / "predictions.jsonl"  # a parent that does not exist yet is created
    assert predict_main([str(run_dir), "--input", str(input_path), "--output", str(out), *extra]) == 0
    return read_jsonl(out)


def assert_matches_run(out: list[dict], run_dir: Path, rows: list[dict], tol: float = 1e-5) -> None:
    expected = run_probs(run_dir, rows)
    assert np.abs(probs_of(out) - expected).max() < tol
    assert [o["label"] for o in out] == [LABELS[i] for i in expected.argmax(-1)]


# ----------------------------------------------------------------------------------------------------------
# Predicting.


def test_jsonl_csv_and_text_inputs_reproduce_the_runs_predictions(full_run, test_rows, tmp_path):
    rows = test_rows[::-1]  # not the order the run wrote them in
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"id": r["id"], "review": r["text"], "extra": 1} for r in rows])
    out = predict_file(full_run, jsonl, tmp_path, "--text-column", "review", "--batch-size", "5")
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert_matches_run(out, full_run, rows)

    with open(tmp_path / "in.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "text", "domain"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("id", "text", "domain")} for r in rows)
    out = predict_file(full_run, tmp_path / "in.csv", tmp_path)
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert_matches_run(out, full_run, rows)

    # Plain text: one example per non-empty line, no ids; blank lines are skipped.
    (tmp_path / "in.txt").write_text("\n".join(r["text"] + "\n" for r in rows))
    out = predict_file(full_run, tmp_path / "in.txt", tmp_path)
    assert len(out) == len(rows) and all("id" not in o for o in out)
    assert_matches_run(out, full_run, rows)


def test_stdin_plain_text_and_json_lines_to_stdout(full_run, test_rows, monkeypatch, capsys):
    rows = test_rows[:7]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(r["text"] + "\n" for r in rows)))
    out = predict([str(full_run / "model"), "--input", "-", "--output", "-"], capsys)  # the run's model/ directly
    assert_matches_run(out, full_run, rows)

    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n"
                                                         for r in rows)))
    out = predict([str(full_run), "--input", "-", "--output", "-"], capsys)
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert_matches_run(out, full_run, rows)


def test_output_is_in_input_order_although_batches_are_sorted_by_length(full_run, monkeypatch, tmp_path):
    import adapt.serving.inference

    words = "gripping boring sturdy flimsy the very really quite".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=n)) for n in (1, 20, 3, 14, 2, 25, 8, 1, 17, 5)]
    seen: list[list[int]] = []
    real = adapt.serving.inference.eval_loader

    def spy(ds, batch_size, collate):
        loader = real(ds, batch_size, collate)
        seen.extend(b["idx"].tolist() for b in loader)
        return loader

    monkeypatch.setattr(adapt.serving.inference, "eval_loader", spy)
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    out = predict_file(full_run, path, tmp_path, "--batch-size", "3")
    assert seen[0] != [0, 1, 2], "batches should follow length, not input order"
    assert seen[0][0] == 5  # the longest text first
    assert [o["id"] for o in out] == list(range(len(texts)))
    # Each output row is that text's own prediction, computed alone.
    m = load_for_inference(full_run)
    alone = np.concatenate([predict_texts(m.model, m.tokenizer, [t], 32, "head", 1) for t in texts])
    assert np.abs(probs_of(out) - alone).max() < 1e-5


def test_max_length_defaults_to_the_recipe_and_can_be_overridden(full_run, tmp_path, capsys):
    text = "the book was " + "really " * 40 + "boring ."  # 47 tokens with [CLS]/[SEP]; the cue is at the end
    path = write_jsonl(tmp_path / "long.jsonl", [{"text": text}])
    m = load_for_inference(full_run)
    assert (m.data_cfg.max_length, m.data_cfg.truncation) == (32, "head")

    def alone(t: str, max_length: int) -> np.ndarray:
        return predict_texts(m.model, m.tokenizer, [t], max_length, "head", 1)

    default = probs_of(predict_file(full_run, path, tmp_path))  # the recipe's 32 tokens: the cue is cut off
    assert np.abs(default - alone("the book was " + "really " * 27, 64)).max() < 1e-5
    longer = probs_of(predict_file(full_run, path, tmp_path, "--max-length", "64"))
    assert np.abs(longer - alone(text, 64)).max() < 1e-5 and np.abs(longer - default).max() > 1e-3
    short = probs_of(predict_file(full_run, path, tmp_path, "--max-length", "4"))
    assert np.abs(short - alone("the book", 64)).max() < 1e-5
    capsys.readouterr()
    assert "--max-length 65 is more than this model takes (64 tokens)" in fail(
        predict_main, [str(full_run), "--input", str(path), "--output", "-", "--max-length", "65"], capsys)


# ----------------------------------------------------------------------------------------------------------
# Exporting.


def export_info(folder: Path) -> dict:
    return json.loads((folder / "adapt_export.json").read_text())


def test_fp32_export_is_a_plain_transformers_model(full_run, test_rows, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "export"
    assert export_main([str(full_run), "--out", str(out)]) == 0
    info = export_info(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert AutoTokenizer.from_pretrained(out)("sturdy pan")["input_ids"].count(1) == 0  # 1 = [UNK]
    assert info["int8"] is False and info["adapter_merged"] is None and info["lora_merged"] is False
    assert info["source"] == str(full_run.resolve())
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["weights_bytes"] == (out / "model.safetensors").stat().st_size
    assert info["data"] == {"max_length": 32, "truncation": "head", "normalize": "none"}
    assert not list(tmp_path.glob(".export.tmp-*"))

    path = write_jsonl(tmp_path / "in.jsonl", test_rows)
    assert_matches_run(predict_file(out, path, tmp_path), full_run, test_rows)


def test_lora_run_predicts_and_its_merged_export_agrees(lora_run, test_rows, tmp_path):
    from transformers import AutoModelForSequenceClassification

    path = write_jsonl(tmp_path / "in.jsonl", test_rows)
    adapter_out = predict_file(lora_run, path, tmp_path)
    assert_matches_run(adapter_out, lora_run, test_rows)

    out = tmp_path / "merged"
    assert export_main([str(lora_run), "--out", str(out)]) == 0
    assert not (out / "adapter_config.json").exists() and export_info(out)["adapter_merged"] == "lora"
    plain = AutoModelForSequenceClassification.from_pretrained(out)
    assert not any("lora" in n for n, _ in plain.named_parameters())
    merged_out = predict_file(out, path, tmp_path)
    assert np.abs(probs_of(merged_out) - probs_of(adapter_out)).max() < 1e-4
    assert [o["label"] for o in merged_out] == [o["label"] for o in adapter_out]


@pytest.fixture(scope="module")
def int8_export(full_run, tmp_path_factory) -> tuple[Path, list[warnings.WarningMessage]]:
    out = tmp_path_factory.mktemp("int8") / "export"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert export_main([str(full_run), "--out", str(out), "--int8"]) == 0
    return out, caught


def test_int8_export_is_smaller_and_agrees_with_fp32(full_run, int8_export, test_rows, tmp_path):
    out, caught = int8_export
    info = export_info(out)
    assert info["int8"] is True and info["weights"] == ["model_int8.pt"]
    fp32 = load_for_inference(full_run)
    assert info["parameters"] == sum(p.numel() for p in fp32.model.parameters())
    # 2 layers x 6 Linear layers + the pooler, and the word embeddings; the classifier head stays fp32.
    plan = info["quantization"]["modules"]
    assert sorted(plan.values()).count("per_channel_dynamic_qconfig") == 13 and len(plan) == 14
    assert "classifier" not in plan and plan["bert.embeddings.word_embeddings"] == "float_qparams_weight_only_qconfig"
    assert not [w for w in caught if "quantiz" in str(w.message)], "torch.ao's deprecation warnings must be filtered"

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # torch rebuilding qint8 tensors
        state = torch.load(out / "model_int8.pt", weights_only=True)
    words = fp32.model.bert.embeddings.word_embeddings.weight
    saved_words = state["bert.embeddings.word_embeddings._packed_params._packed_weight"].dequantize()
    step = (words.max(1).values - words.min(1).values).max() / 255  # 8-bit rows: half a step of rounding
    assert (saved_words - words).abs().max() <= step
    linear = [n for n, qconfig in plan.items() if qconfig == "per_channel_dynamic_qconfig"]
    for name in linear:
        weight, _bias = state[f"{name}._packed_params._packed_params"]
        assert weight.dtype == torch.qint8 and weight.qscheme() == torch.per_channel_affine

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = load_for_inference(out)
    assert not [w.message for w in caught if issubclass(w.category, (DeprecationWarning, UserWarning))]
    assert sum(isinstance(x, torch.ao.nn.quantized.dynamic.Linear) for x in m.model.modules()) == 13
    assert sum(isinstance(x, torch.ao.nn.quantized.Embedding) for x in m.model.modules()) == 1
    path = write_jsonl(tmp_path / "in.jsonl", test_rows)
    q = probs_of(predict_file(out, path, tmp_path))
    f = probs_of(predict_file(full_run, path, tmp_path))
    assert (q.argmax(-1) == f.argmax(-1)).mean() >= 0.9  # a near-tie may flip on a tiny random model
    # Each int8 stage rounds to 1/255 of a weight row's (or a batch's activations') range, ~0.2-0.4% relative
    # error; over the encoder's stacked matmuls the logits (|logit| ~ 1-2 here) move by at most a few hundredths,
    # and a softmax probability moves by at most a quarter of the change in the logit difference. Measured on
    # this model: at most 0.002. 0.02 leaves room for other CPUs' kernels while still catching a broken rebuild
    # (a wrong scale or a layer left random moves probabilities by ~0.1 or more).
    assert np.abs(q - f).max() < 0.02


def test_int8_folder_is_smaller_than_fp32_folder(full_run, int8_export, tmp_path):
    out, _ = int8_export
    fp32 = tmp_path / "fp32"
    assert export_main([str(full_run), "--out", str(fp32)]) == 0
    assert export_info(out)["folder_bytes"] < export_info(fp32)["folder_bytes"]
    assert export_info(out)["weights_bytes"] < export_info(fp32)["weights_bytes"]


def test_int8_export_of_a_model_folder_is_about_a_quarter_of_fp32(tmp_path):
    """On the tiny run, torch.save's per-tensor overhead hides most of the saving; a wider model shows it (1 byte
    per Linear and embedding weight instead of 4; biases and LayerNorms stay fp32)."""
    from conftest import make_tokenizer, vocab
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab()), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512, max_position_embeddings=64, id2label=dict(enumerate(LABELS)))
    folder = tmp_path / "plain"
    BertForSequenceClassification(cfg).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    assert export_main([str(folder), "--out", str(tmp_path / "fp32")]) == 0
    assert export_main([str(folder), "--out", str(tmp_path / "int8"), "--int8"]) == 0
    fp32, int8 = export_info(tmp_path / "fp32"), export_info(tmp_path / "int8")
    assert fp32["source"] == str(folder.resolve()) and fp32["data"] == {"max_length": 256, "truncation": "head", "normalize": "none"}
    assert int8["parameters"] == fp32["parameters"]
    assert int8["weights_bytes"] < 0.35 * fp32["weights_bytes"]


def test_export_refuses_a_non_empty_out_and_leaves_it_untouched(full_run, int8_export, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export_main([str(full_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not empty" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging directory left behind

    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_main([str(full_run), "--out", str(empty)]) == 0 and (empty / "adapt_export.json").exists()
    assert export_main([str(int8_export[0]), "--out", str(tmp_path / "again")]) == 2
    assert "already an int8 export" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Bad input: one message, exit code 2, no traceback, nothing written.


def fail(main, argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


@pytest.mark.parametrize(
    ("content", "suffix", "argv", "expected"),
    [
        ('{"text": "a ."}\n{"text": "b ."}\n{"text": oops}\n', ".jsonl", [], "in.jsonl line 3 is not valid JSON"),
        ('{"text": "a ."}\n[1, 2]\n', ".jsonl", [], "line 2 is not a JSON object"),
        ('{"id": 1, "body": "a ."}\n', ".jsonl", [], "has no `text` column; its columns are ['body', 'id']"),
        ('{"text": "a ."}\n', ".jsonl", ["--text-column", "review"], "has no `review` column; its columns are ['text']"),
        ('{"text": "a ."}\n{"text": 5}\n', ".jsonl", [], "line 2: `text` must be a string, got int 5"),
        ('{"text": null}\n', ".jsonl", [], "line 1: `text` must be a string, got NoneType null"),
        ("id,body\n1,a .\n", ".csv", [], "has no `text` column; its columns are ['id', 'body']"),
        ("", ".jsonl", [], "holds no examples"),
        ("\n  \n", ".txt", [], "holds no examples"),
        ("id,text\n", ".csv", [], "holds no examples"),
        ("[]", ".json", [], ".json is not supported"),
    ],
)
def test_bad_input_files(full_run, tmp_path, capsys, content, suffix, argv, expected):
    path = tmp_path / f"in{suffix}"
    path.write_text(content)
    out = tmp_path / "out.jsonl"
    err = fail(predict_main, [str(full_run), "--input", str(path), "--output", str(out), *argv], capsys)
    assert expected in err
    assert not out.exists()


def test_bad_run_dirs_and_paths(full_run, tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": "sturdy pan ."}])
    out = tmp_path / "out.jsonl"

    def bad(run_dir: Path, *, input_path: Path = inp, output: Path = out) -> str:
        return fail(predict_main, [str(run_dir), "--input", str(input_path), "--output", str(output)], capsys)

    assert "does not exist" in bad(tmp_path / "nope")
    assert "holds no model" in bad(tmp_path)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text("seed: 0\n")
    assert "without a saved model" in bad(unfinished)
    assert f"--input {tmp_path / 'missing.jsonl'} not found" in bad(full_run, input_path=tmp_path / "missing.jsonl")
    assert "is a directory" in bad(full_run, output=tmp_path)
    assert "is a file, not a directory" in bad(full_run, output=inp / "out.jsonl")
    assert not out.exists() and inp.read_text() == '{"text": "sturdy pan ."}\n'
    assert "holds no model" in fail(export_main, [str(tmp_path), "--out", str(tmp_path / "exp")], capsys)
    assert not (tmp_path / "exp").exists()
    assert "cannot write --out" in fail(export_main, [str(full_run), "--out", str(inp / "exp")], capsys)


def test_int8_quantisation_keeps_the_head_in_fp32_and_the_original_intact(full_run):
    from adapt.serving.int8 import int8_plan, quantize_int8

    m = load_for_inference(full_run).model
    q = quantize_int8(m, int8_plan(m))
    assert type(q.classifier) is torch.nn.Linear and type(q.bert.pooler.dense) is not torch.nn.Linear
    assert type(m.bert.pooler.dense) is torch.nn.Linear  # quantising copies the model
