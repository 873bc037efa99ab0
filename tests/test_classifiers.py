"""HF text-classification backends for demographics and personality, on a tiny local model
made here (the real ones download by name; the loading code is the same)."""
from __future__ import annotations

import pytest

from gravity_core.profile.config import ClassifierConfig
from gravity_core.profile.records import TRAITS


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A 2-layer BERT with a word-level tokenizer and the five trait labels, saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "i", "love", "books", "quiet", "stories"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    labels = {i: f"LABEL_{i}" for i in range(5)}
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=5, id2label=labels, label2id={v: k for k, v in labels.items()})
    path = tmp_path_factory.mktemp("tiny-classifier")
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_levels_from_a_local_multilabel_classifier(tiny_classifier):
    from tasks.classifiers import hf_classify_levels
    cfg = ClassifierConfig(backend="hf", model=tiny_classifier, label_map={f"LABEL_{i}": t for i, t in enumerate(TRAITS)})
    levels = hf_classify_levels(cfg, "i love quiet stories")
    assert set(levels) == set(TRAITS) and set(levels.values()) <= {"high", "low"}


def test_unmapped_traits_are_an_error(tiny_classifier):
    from tasks.classifiers import hf_classify_levels
    with pytest.raises(ValueError, match="label_map"):
        hf_classify_levels(ClassifierConfig(backend="hf", model=tiny_classifier), "i love books")


def test_top_label_after_mapping_must_be_allowed(tiny_classifier):
    from tasks.classifiers import _scores, hf_classify_label
    scores = _scores(ClassifierConfig(backend="hf", model=tiny_classifier), "i love books")
    top = max(scores, key=scores.get)
    bins = ("young", "middle-aged", "senior")
    mapped = ClassifierConfig(backend="hf", model=tiny_classifier, label_map={top: "senior"})
    assert hf_classify_label(mapped, "i love books", bins) == "senior"
    with pytest.raises(ValueError, match="not one of"):
        hf_classify_label(ClassifierConfig(backend="hf", model=tiny_classifier), "i love books", bins)


def test_hf_backend_needs_a_model():
    with pytest.raises(ValueError, match="needs model"):
        ClassifierConfig(backend="hf")
