"""``embedding_model``: a sentence-transformers StaticEmbedding trained here, served with numpy.

Training builds a WordPiece tokenizer from the project's own text (``tokenizers``, with a vocabulary
ranked deterministically), then trains a
``SentenceTransformer([StaticEmbedding, Normalize])`` from random initialisation in two phases:
knowledge-base pairs with MultipleNegativesRankingLoss (duplicate-free batches), then the intent
examples with BatchAllTripletLoss over label-grouped batches, so sentences of the same intent are
never used as each other's negatives. Nothing is downloaded.

Serving uses :class:`StaticEncoder`, which holds the same tokenizer and embedding table and
computes the same vectors (mean of token vectors, L2-normalised) with numpy alone.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

logger = logging.getLogger(__name__)


class StaticEncoder:
    """Numpy twin of ``StaticEmbedding`` + ``Normalize``: mean of token vectors, unit length."""

    def __init__(self, tokenizer_json: str, weights: np.ndarray):
        self.tokenizer_json = tokenizer_json
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self._tokenizer = self._build_tokenizer(tokenizer_json)

    @staticmethod
    def _build_tokenizer(tokenizer_json: str) -> Tokenizer:
        tokenizer = Tokenizer.from_str(tokenizer_json)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    def __getstate__(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json, "weights": self.weights}

    def __setstate__(self, state: dict) -> None:
        self.tokenizer_json = state["tokenizer_json"]
        self.weights = state["weights"]
        self._tokenizer = self._build_tokenizer(self.tokenizer_json)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts into unit-length float32 vectors of shape ``(len(texts), dim)``."""
        texts = [str(text) for text in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for row, encoding in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            if encoding.ids:
                out[row] = self.weights[encoding.ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)


def fit_whitening(encoder: StaticEncoder, texts: Sequence[str], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix of the embedding vectors of (unlabelled, normalised) ``texts``.

    ``(v - mean) @ matrix`` has (nearly) identity covariance over those texts; ``eps`` (a fraction of
    the largest eigenvalue added to every eigenvalue) keeps the noise directions from being blown up.
    """
    vectors = encoder.encode(list(texts)).astype(np.float64)
    if len(vectors) < 2:
        raise ValueError(f"whitening needs at least 2 texts to estimate a covariance, got {len(vectors)}")
    mean = vectors.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((vectors - mean).T))
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    if eigenvalues.max() <= 0:
        raise ValueError("whitening: the texts' embedding vectors are all identical (no variance to whiten)")
    matrix = eigenvectors / np.sqrt(eigenvalues + eps * eigenvalues.max())
    return mean.astype(np.float32), matrix.astype(np.float32)


def whiten(vectors: np.ndarray, whitening: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``vectors`` centred, whitened and scaled to length 1.

    A zero row (a text with no known token) stays zero: centring would otherwise give it a definite
    direction, the opposite of the mean, and a prediction it has no evidence for.
    """
    mean, matrix = whitening
    out = (vectors - mean) @ matrix
    out[~np.asarray(vectors).any(axis=1)] = 0.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    """Build a lower-casing WordPiece tokenizer from the project's own text, deterministically.

    The vocabulary is every character (plain and ``##``-continuation), then whole words and
    frequent word prefixes (3-5 characters) and ``##`` suffixes (2-4 characters), ranked by
    (frequency, then alphabetically) until ``vocab_size``. The ``tokenizers`` WordPiece *trainer*
    breaks frequency ties differently from run to run; ranking them ourselves keeps training
    reproducible. Greedy longest-match WordPiece then splits an unseen or misspelt word into the
    pieces it shares with known words.
    """
    from collections import Counter

    from tokenizers import models, normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in corpus:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({char for word in words for char in word})
    pieces: Counter[str] = Counter()
    for word, count in words.items():
        pieces.update({word[:k]: count for k in range(3, 6) if len(word) > k})
        pieces.update({"##" + word[-k:]: count for k in range(2, 5) if len(word) > k})
    vocab = ["[UNK]", *chars, *("##" + char for char in chars)]
    known = set(vocab)
    ranked = sorted(
        [*words.items(), *((p, n) for p, n in pieces.items() if n >= 2)], key=lambda item: (-item[1], item[0])
    )
    for token, _ in ranked:
        if len(vocab) >= vocab_size:
            break
        if token not in known:
            vocab.append(token)
            known.add(token)
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    return tokenizer


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fit(model, dataset, loss, *, epochs: int, batch_size: int, lr: float, sampler: str, seed: int, workdir: Path):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.model_card import BaseModelCardCallback
    from transformers import PrinterCallback

    args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=0,
        batch_sampler=sampler,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    # A non-empty widget list stops the model-card callback sampling "widget examples" (with its own
    # progress bar) when the trainer is created; we never publish a model card.
    model.model_card_data.widget = model.model_card_data.widget or [{"text": "travel"}]
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.remove_callback(PrinterCallback)  # our own progress display reports the steps
    for callback in [c for c in trainer.callback_handler.callbacks if isinstance(c, BaseModelCardCallback)]:
        trainer.remove_callback(callback)  # it renders a model card with a progress bar we never publish
    trainer.train()


def distill_static(transformer_model, embedding_dim: int, batch_size: int = 512):
    """A ``StaticEmbedding`` distilled from a transformer sentence model (the model2vec recipe, short).

    Every token of the model's own vocabulary goes through the transformer alone (``[CLS] token
    [SEP]``); the mean of its output states becomes that token's vector. The table is reduced to
    ``embedding_dim`` with PCA and each token weighted down by its Zipf frequency rank, as model2vec
    does, so frequent sub-words count less. Serving then needs the tokenizer and the table only.

    Args:
        transformer_model: A loaded ``SentenceTransformer`` whose first module wraps a Hugging Face model.
        embedding_dim: Width of the distilled table (at most the transformer's hidden size).
        batch_size: Tokens per forward pass.
    """
    import torch
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    first = transformer_model[0]
    hf_tokenizer, network = first.tokenizer, first.auto_model.eval()
    size = hf_tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=True)
    cls_id, sep_id = hf_tokenizer.cls_token_id, hf_tokenizer.sep_token_id
    vectors = []
    with torch.inference_mode():
        for start in range(0, size, batch_size):
            ids = torch.arange(start, min(start + batch_size, size)).unsqueeze(1)
            batch = torch.cat([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            states = network(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            vectors.append(states.mean(dim=1).numpy())
    table = np.concatenate(vectors).astype(np.float64)
    table -= table.mean(axis=0)
    dim = min(embedding_dim, table.shape[1])
    _, _, components = np.linalg.svd(table, full_matrices=False)
    table = table @ components[:dim].T
    table *= np.log1p(np.arange(size, dtype=np.float64))[:, None] / np.log1p(size)  # Zipf: id ~ frequency rank
    logger.info("distilled a %d x %d static table from %s", size, dim, type(network).__name__)
    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    return StaticEmbedding(tokenizer, embedding_weights=table.astype(np.float32))


def train_embedding(
    labelled: Sequence[tuple[str, str]],
    pairs: Sequence[tuple[str, str]],
    corpus: Iterable[str],
    *,
    vocab_size: int,
    embedding_dim: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    workdir: Path,
    base_model: str | None = None,
    triplet_margin: float = 0.6,
):
    """Train the embedding model.

    Args:
        labelled: ``(text, intent)`` training examples for the label-aware triplet phase.
        pairs: ``(anchor, positive)`` pairs from the knowledge base for the contrastive phase.
        corpus: All text the tokenizer may learn its vocabulary from.
        vocab_size: Tokenizer vocabulary size.
        embedding_dim: Width of the embedding table.
        epochs: Epochs of each phase.
        batch_size: Batch size of each phase.
        learning_rate: Adam learning rate (static embeddings want a high one).
        seed: Seed for tokenizer-independent randomness (init, shuffling).
        workdir: Scratch folder for the trainer.
        base_model: Optional local path of a static-embedding sentence-transformers model to
            fine-tune instead of starting from random vectors.
        triplet_margin: Margin of the triplet phase, in euclidean distance between unit vectors
            (at most 2). The loss's default, 5, can never be met there, so every triplet keeps
            pulling as hard as a violated one; 0.5–0.7 lets the separated ones rest.

    Returns:
        ``(sentence_transformer_model, StaticEncoder)``.

    Raises:
        ValueError: ``base_model`` is not a local static-embedding model.
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    _seed_everything(seed)
    if base_model:
        if not Path(base_model).is_dir():
            raise ValueError(f"training.embedding_model.base_model: '{base_model}' is not a local folder")
        model = SentenceTransformer(base_model, device="cpu", local_files_only=True)
        if not isinstance(model[0], StaticEmbedding):
            if not hasattr(model[0], "auto_model"):
                raise ValueError(
                    f"training.embedding_model.base_model: '{base_model}' starts with a {type(model[0]).__name__}; "
                    "a StaticEmbedding or a Hugging Face transformer model is needed"
                )
            model = SentenceTransformer(modules=[distill_static(model, embedding_dim), Normalize()], device="cpu")
        if not any(isinstance(module, Normalize) for module in model):
            model.append(Normalize())
    else:
        tokenizer = train_tokenizer(corpus, vocab_size)
        model = SentenceTransformer(
            modules=[StaticEmbedding(tokenizer, embedding_dim=embedding_dim), Normalize()], device="cpu"
        )

    pair_data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    _fit(
        model, pair_data, losses.MultipleNegativesRankingLoss(model),
        epochs=epochs, batch_size=batch_size, lr=learning_rate, sampler="no_duplicates", seed=seed,
        workdir=workdir / "pairs",
    )  # fmt: skip
    label_ids = {label: idx for idx, label in enumerate(sorted({label for _, label in labelled}))}
    label_data = Dataset.from_dict(
        {"sentence": [text for text, _ in labelled], "label": [label_ids[label] for _, label in labelled]}
    )
    _fit(
        model, label_data, losses.BatchAllTripletLoss(model, margin=triplet_margin),
        epochs=epochs, batch_size=batch_size, lr=learning_rate, sampler="group_by_label", seed=seed,
        workdir=workdir / "labels",
    )  # fmt: skip

    static = model[0]
    weights = static.embedding.weight.detach().cpu().numpy()
    return model, StaticEncoder(static.tokenizer.to_str(), weights)


def triplet_accuracy(encoder: StaticEncoder, triplets: Sequence[tuple[str, str, str]]) -> float:
    """Fraction of ``(anchor, positive, negative)`` triplets with cos(a, p) > cos(a, n)."""
    if not triplets:
        return 0.0
    texts = sorted({text for triplet in triplets for text in triplet})  # each text encoded once
    row = {text: i for i, text in enumerate(texts)}
    vectors = encoder.encode(texts)
    anchors, positives, negatives = (vectors[[row[t[i]] for t in triplets]] for i in range(3))
    pos = np.einsum("ij,ij->i", anchors, positives)
    neg = np.einsum("ij,ij->i", anchors, negatives)
    return float(np.mean(pos > neg))


def make_triplets(texts: Sequence[str], labels: Sequence[str], n: int, seed: int) -> list[tuple[str, str, str]]:
    """Sample ``n`` triplets: a positive of the anchor's label and a negative of another label."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        by_label.setdefault(label, []).append(text)
    usable = [label for label, items in by_label.items() if len(items) >= 2]
    if len(usable) < 2:
        return []
    triplets = []
    for _ in range(n):
        label = rng.choice(usable)
        anchor, positive = rng.sample(by_label[label], 2)
        other = rng.choice([item for item in by_label if item != label])
        triplets.append((anchor, positive, rng.choice(by_label[other])))
    return triplets
