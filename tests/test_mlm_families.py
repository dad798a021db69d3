"""The MLM head of every encoder family: the checkpoint's own head is reused (same weights, same logits as the
family's *ForMaskedLM), its decoder is the encoder's word embedding matrix itself, a checkpoint without a head gets a
fresh one, and a `dapt` run works on each family (ELECTRA's factorised embeddings included)."""

from __future__ import annotations

import json

import pytest
import torch
from families import FAMILIES

from adapt import load_recipe
from adapt.methods.mlm.head import HeadSpec, MlmHead, build_mlm_head
from adapt.training.run import run


def classifier(path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()


def masked_batch(tokenizer, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Corpus sentences with ~30% of the real tokens to predict (labels -100 elsewhere)."""
    from families import corpus

    batch = tokenizer(corpus()[1:9], padding=True, return_tensors="pt")
    special = torch.tensor(tokenizer.all_special_ids)
    gen = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(batch["input_ids"].shape, generator=gen) < 0.3) & ~torch.isin(batch["input_ids"], special)
    labels = torch.where(chosen & batch["attention_mask"].bool(), batch["input_ids"], -100)
    ids = torch.where(labels != -100, tokenizer.mask_token_id, batch["input_ids"])
    return {"input_ids": ids, "attention_mask": batch["attention_mask"]}, labels


def head_logits(clf, head: MlmHead, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    hidden = clf(**inputs, output_hidden_states=True).hidden_states[-1]
    return head(hidden, labels)


@pytest.mark.parametrize("name", FAMILIES)
def test_head_is_the_checkpoints_own_and_tied(name, family_model_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = family_model_dir(name)
    clf = classifier(path)
    head, pretrained = build_mlm_head(clf, str(path))
    assert pretrained

    # Every parameter of the family's own head (the tied decoder aside) is in ours with the same value...
    mlm = AutoModelForMaskedLM.from_pretrained(path).eval()
    words = mlm.get_input_embeddings().weight
    theirs = [p for n, p in mlm.named_parameters() if not n.startswith(mlm.base_model_prefix + ".") and p is not words]
    ours = list(head.parameters())
    assert len(ours) == len(theirs)
    assert all(any(a.shape == b.shape and torch.equal(a, b) for a in ours) for b in theirs)
    # ... and on masked positions it predicts exactly what the family's *ForMaskedLM predicts.
    inputs, labels = masked_batch(AutoTokenizer.from_pretrained(path))
    with torch.no_grad():
        expected = mlm(**inputs).logits[labels != -100]
        assert torch.allclose(head_logits(clf, head, inputs, labels), expected, atol=1e-5)

    # Tied: the decoder is the classifier's word embedding matrix itself, neither copied nor a parameter of the head.
    assert head.decoder_weight is clf.get_input_embeddings().weight
    assert not any(p.data_ptr() == words.data_ptr() or p is clf.get_input_embeddings().weight
                   for p in head.parameters())
    assert all(t.shape[0] != words.shape[0] or t.dim() == 1 for t in head.state_dict().values())


def test_checkpoint_without_head_gets_a_fresh_one(tiny_model_dir, family_model_dir, tmp_path):
    from transformers import ElectraModel

    clf = classifier(tiny_model_dir)  # a BertModel: no MLM head
    head, pretrained = build_mlm_head(clf, str(tiny_model_dir))
    assert not pretrained and head.spec == HeadSpec(eps=clf.config.layer_norm_eps)
    assert torch.equal(head.bias, torch.zeros_like(head.bias))

    # An ELECTRA discriminator (no generator head) with factorised embeddings: a fresh head that projects the hidden
    # states down to the embedding width before the tied decoder.
    electra = family_model_dir("electra")
    ElectraModel.from_pretrained(electra).save_pretrained(tmp_path / "disc")
    clf = classifier(tmp_path / "disc")
    head, pretrained = build_mlm_head(clf, str(tmp_path / "disc"))
    assert not pretrained
    assert (head.dense.in_features, head.dense.out_features) == (32, 16)
    labels = torch.full((2, 5), -100)
    labels[:, 1] = 3
    assert head(torch.randn(2, 5, 32), labels).shape == (2, clf.config.vocab_size)


def _pretrain(path, out):
    """The family's checkpoint after a few hundred masked-LM steps on the test corpus: a head that has learnt."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    mlm = AutoModelForMaskedLM.from_pretrained(path).train()
    opt = torch.optim.AdamW(mlm.parameters(), lr=3e-3)
    for step in range(150):
        inputs, labels = masked_batch(tok, seed=step + 1)
        mlm(**inputs, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    mlm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_reused_head_starts_with_a_lower_mlm_loss_than_a_fresh_one(family_model_dir, tmp_path):
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    path = _pretrain(family_model_dir("electra"), tmp_path / "electra")  # factorised: the hardest layout
    clf = classifier(path)
    reused, pretrained = build_mlm_head(clf, str(path))
    assert pretrained
    torch.manual_seed(0)
    fresh = MlmHead(clf.get_input_embeddings(), clf.config.hidden_size, reused.spec)
    inputs, labels = masked_batch(AutoTokenizer.from_pretrained(path), seed=0)
    targets = labels[labels != -100]
    with torch.no_grad():
        loss = {k: F.cross_entropy(head_logits(clf, h, inputs, labels), targets).item()
                for k, h in (("reused", reused), ("fresh", fresh))}
    assert loss["reused"] < 0.7 * loss["fresh"], loss


@pytest.mark.parametrize("name", [*FAMILIES, None])
def test_dapt_runs_on_every_family_and_reports_where_its_head_came_from(name, family_model_dir, tiny_recipe, tmp_path):
    out = tmp_path / "dapt"
    model = [f"model.name_or_path={family_model_dir(name)}"] if name else []  # None: the tiny BertModel, no head
    report = run(load_recipe(tiny_recipe, [*model, "method.name=dapt", "method.mlm.steps=2", "train.epochs=1",
                                           "train.max_steps=4", f"output_dir={out}"]))
    assert report["method_summary"]["mlm_head"] == ("pretrained" if name else "fresh")
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    mlm_rows = [r for r in rows if r.get("phase_name") == "mlm"]
    assert len(mlm_rows) == 2 and all(r["mlm"] > 0 for r in mlm_rows)
    assert "head" in json.loads((out / "mlm" / "mlm.json").read_text())


def loaded_model(recipe_path, overrides: list[str]):
    """The model (classifier + heads) a run with `method.mlm.checkpoint` starts from, built as `adapt train` does."""
    from adapt.methods import get_method
    from adapt.training.run import setup_model

    recipe = load_recipe(recipe_path, overrides)
    return setup_model(recipe, ["negative", "positive"], get_method(recipe.method.name)).model


def test_mlm_folder_reloads_the_head_it_recorded_and_legacy_folders_load(family_model_dir, tiny_recipe, tmp_path):
    from safetensors.torch import load_file, save_file

    # ModernBERT's head has no dense or norm bias; mlm.json records that, and a reusing run rebuilds that head.
    first = tmp_path / "modernbert"
    model = f"model.name_or_path={family_model_dir('modernbert')}"
    run(load_recipe(tiny_recipe, [model, "method.name=dapt", "method.mlm.steps=2", "train.max_steps=3",
                                  f"output_dir={first}"]))
    saved = load_file(str(first / "mlm" / "model.safetensors"))
    net = loaded_model(tiny_recipe, [model, "method.name=dapt", f"method.mlm.checkpoint={first / 'mlm'}"])
    head = net.heads["mlm"]
    assert head.dense.bias is None and head.norm.bias is None
    assert all(torch.equal(v, saved[f"heads.mlm.{k}"]) for k, v in head.state_dict().items())
    assert head.decoder_weight is net.classifier.get_input_embeddings().weight  # the rebuilt head is tied too

    # The same folder as adapt wrote it before mlm.json recorded the head: BERT's head, with both biases and the
    # eps it read from `layer_norm_eps` (1e-12 when the config has none). It still loads, into that head.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    info = json.loads((first / "mlm" / "mlm.json").read_text())
    assert info.pop("head") == {"activation": "gelu", "eps": 1e-5, "dense_bias": False, "norm_bias": False,
                                "output_bias": True}
    (legacy / "mlm.json").write_text(json.dumps(info))
    old = {**saved, "heads.mlm.dense.bias": torch.randn(32), "heads.mlm.norm.bias": torch.randn(32)}
    save_file(old, str(legacy / "model.safetensors"))
    head = loaded_model(tiny_recipe, [model, "method.name=dapt", f"method.mlm.checkpoint={legacy}"]).heads["mlm"]
    assert head.spec == HeadSpec() and head.norm.eps == 1e-12
    assert all(torch.equal(v, old[f"heads.mlm.{k}"]) for k, v in head.state_dict().items())
    report = run(load_recipe(tiny_recipe, [model, "method.name=dapt", f"method.mlm.checkpoint={legacy}",
                                           "train.max_steps=1", f"output_dir={tmp_path / 'reuse'}"]))
    assert report["method_summary"]["mlm_head"] == f"loaded from {legacy}"
