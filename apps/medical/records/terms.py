"""Clinical terms of a note and their sparse counts: the text side of the similar-case index.

``analyze`` is the tokenisation of the BM25 and hybrid methods (``retrieval``): lowercased
alphanumeric runs, a short stopword list, and bigrams of words adjacent once stopwords are gone.
The count helpers turn analysed texts into CSR matrices over a learned or a fixed vocabulary,
written with numpy and scipy only, so that a saved index needs no vectorizer object (and no
pickle) to be read back and to vectorise a query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

__all__ = ["STOPWORDS", "analyze", "concept_tfidf", "fit_counts", "normalize_concepts", "term_counts"]

# Generic English function words and transcription boilerplate only. Clinical content words stay,
# including "history", "denies", units ("mg") and negations ("no", "not", "without"), which form
# useful bigrams ("no fracture").
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself nor now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves also may might must shall upon
    patient patients pt pts mr mrs ms miss dr year years old yo y o today noted please
    dictated transcribed dictation transcription cc
    """.split()  # noqa: SIM905  # a word list reads better than 150 quoted strings
)

_TOKEN_OR_BREAK = re.compile(r"[^\W_]+|[.;:!?]")


def analyze(text: str) -> list[str]:
    """Clinical terms of ``text``: kept unigrams plus bigrams of adjacent kept unigrams.

    Lowercased runs of letters/digits; stopwords and single letters are dropped (digits stay:
    "type 2"). Bigrams join tokens that are adjacent after stopword removal ("pain in the chest"
    gives "pain chest") but never across sentence punctuation (``. ; : ! ?``), so a section header
    does not pair with the first word of the next line.
    """
    out: list[str] = []
    prev: str | None = None
    for tok in _TOKEN_OR_BREAK.findall(text.lower()):
        if tok in ".;:!?":
            prev = None
            continue
        if tok in STOPWORDS or (len(tok) == 1 and not tok.isdigit()):
            continue
        out.append(tok)
        if prev is not None:
            out.append(f"{prev} {tok}")
        prev = tok
    return out


def normalize_concepts(concepts: Sequence[str]) -> list[str]:
    """Concept strings stripped and lowercased so "Problem:Hypertension " matches "problem:hypertension"."""
    return [c.strip().lower() for c in concepts if c.strip()]


def term_counts(analyzed: Sequence[list[str]], vocabulary: dict[str, int]) -> sp.csr_matrix:
    """Term counts of already analysed texts over a fixed vocabulary (unknown terms dropped)."""
    indptr = [0]
    indices: list[int] = []
    for terms in analyzed:
        for t in terms:
            j = vocabulary.get(t)
            if j is not None:
                indices.append(j)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float64)
    m = sp.csr_matrix(
        (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(analyzed), len(vocabulary)),
    )
    m.sum_duplicates()  # repeated terms become counts
    return m


def concept_tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Raw count x idf, L2-normalised rows: the TfidfVectorizer default, written out so a load needs no pickle."""
    m = counts.tocsr().astype(np.float64, copy=True)
    m.data *= idf[m.indices]
    return normalize(m, norm="l2", copy=False).tocsr()


def fit_counts(
    analyzed: Iterable[list[str]], n_docs: int, min_df: int, max_features: int | None
) -> tuple[sp.csr_matrix, dict[str, int]]:
    """Term counts and vocabulary (first-occurrence order) of analysed documents.

    Terms in fewer than ``min_df`` documents are dropped; beyond ``max_features`` the most frequent
    terms over the corpus are kept (ties: earlier first occurrence). Written out rather than
    ``CountVectorizer`` because that sorts and rebuilds its vocabulary, most of a fit's time.
    The vocabulary comes back empty when no term is left; the caller says why that is an error.
    """
    vocab: dict[str, int] = {}
    indices: list[int] = []
    indptr = [0]
    for terms in analyzed:
        indices.extend([vocab.setdefault(t, len(vocab)) for t in terms])
        indptr.append(len(indices))
    x = sp.csr_matrix(
        (np.ones(len(indices)), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(n_docs, len(vocab)),
    )
    x.sum_duplicates()
    df = np.bincount(x.indices, minlength=len(vocab))
    keep = df >= min_df
    if max_features is not None and keep.sum() > max_features:
        tf = np.bincount(x.indices, weights=x.data, minlength=len(vocab))
        tf[~keep] = -1.0
        best = np.argsort(-tf, kind="stable")[:max_features]
        keep = np.zeros(len(vocab), dtype=bool)
        keep[best] = True
    if not keep.any():
        return x[:, :0].tocsr(), {}
    if not keep.all():
        cols = np.flatnonzero(keep)
        new = np.cumsum(keep) - 1
        x = x[:, cols].tocsr()
        vocab = {t: int(new[j]) for t, j in vocab.items() if keep[j]}
    return x, vocab
