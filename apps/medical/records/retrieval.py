"""Similar-case retrieval: given a clinical note, the indexed notes most like it, with scores.

Three methods share one index class so an evaluation can swap them under equal conditions:

- ``"tfidf"``: the plain baseline (scikit-learn ``TfidfVectorizer`` defaults, cosine). Kept plain on
  purpose: it is what the other methods are measured against.
- ``"bm25"``: Okapi BM25 over clinical terms (lowercased alphanumeric runs, a short stopword list,
  plus word bigrams: ``terms.analyze``), scaled per query to [0, 1] (see ``SimilarCaseIndex``).
- ``"hybrid"``: cosine between L2-normalised BM25 term-weight vectors, optionally blended with a
  TF-IDF cosine over extracted concepts ("problem:hypertension", "medication:metformin").

Scoring is a sparse matrix product over the whole index (no Python loop over documents).
``save``/``load`` write JSON, ``.npy`` and ``.npz`` files only, each checked against the sha256
recorded in ``manifest.json`` (``index_files``): an index is data, never code, so nothing is ever
unpickled. How well neighbours agree with a label is measured in ``hit_rates``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from trillium.medical.records.index_files import (
    CONCEPT_FILES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    RetrievalError,
    read_csr,
    read_json,
    read_npy,
    sha256_file,
    verify_manifest,
)
from trillium.medical.records.terms import analyze, concept_tfidf, fit_counts, normalize_concepts, term_counts

log = logging.getLogger(__name__)

__all__ = ["METHODS", "Hit", "SimilarCaseIndex"]

METHODS = ("tfidf", "bm25", "hybrid")
_BLOCK_ROWS = 512
_TFIDF_ANALYZER = TfidfVectorizer(lowercase=True).build_analyzer()  # the baseline's tokenisation, for queries


@dataclass(frozen=True)
class Hit:
    """One retrieved note: ``rank`` starts at 1; ``score`` is in [0, 1], higher is more similar."""

    note_id: str
    score: float
    rank: int


def check_k(k: int, name: str = "k") -> int:
    """``k`` as an int, or a ``RetrievalError`` when it is not an integer >= 1 (a bool is not)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise RetrievalError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def _dot(q: sp.csr_matrix, postings: sp.csr_matrix) -> np.ndarray:
    """Dense ``q @ doc.T`` through the inverted index (terms x notes): cost follows the query's postings."""
    return (q @ postings).toarray()


def _top_k(scores: np.ndarray, k: int, id_order: np.ndarray) -> np.ndarray:
    """Column indices of the k best scores per row: score descending, then note id ascending.

    ``id_order`` sorts the columns by note id, so a stable order over permuted columns breaks ties
    by id. ``argpartition`` suffices when no row has a tie across the k-th place; otherwise the
    block falls back to a full stable sort, which is exact.
    """
    n = scores.shape[1]
    k = min(k, n)
    perm = scores[:, id_order]
    if k < n:
        part = np.argpartition(-perm, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(perm, part, axis=1)
        kth = vals.min(axis=1)
        if np.all((perm >= kth[:, None]).sum(axis=1) == k):
            order = np.lexsort((part, -vals), axis=1)
            return id_order[np.take_along_axis(part, order, axis=1)]
    idx = np.argsort(-perm, axis=1, kind="stable")[:, :k]
    return id_order[idx]


class SimilarCaseIndex(BaseEstimator):
    """An index of clinical notes answering "which notes are most like this one".

    scikit-learn conventions: ``__init__`` only stores parameters, ``fit`` learns, learned
    attributes end in ``_`` (``note_ids_``, ``vocabulary_``, ``idf_``, ``doc_matrix_``,
    ``avgdl_``, ``concept_vocabulary_``, ``concept_idf_``, ``concept_matrix_``).

    What a score means, per method (always in [0, 1], higher is more similar):

    - ``tfidf``: cosine of TF-IDF vectors.
    - ``bm25``: Okapi BM25 with each distinct query term counted once (binary query term
      frequency: a long note repeating a word must not dominate), divided by
      max(query self-score, best score of any indexed note). The self-score is the BM25 score the
      query's own text would get as a note of this collection, so an exact duplicate scores 1.0
      and a score of 0.4 means "40 % of a perfect self-match". The divisor depends on the query
      only, so the ranking is plain BM25 and scores do not change with ``exclude``.
    - ``hybrid``: cosine of L2-normalised BM25 term-weight vectors (component =
      idf * tf*(k1+1) / (tf + k1*(1-b+b*dl/avgdl))), symmetric between two indexed notes. When
      the index was fitted with concepts and the query has at least one concept the index knows,
      score = (1-concept_weight)*text_cos + concept_weight*concept_cos, concept_cos being a TF-IDF
      cosine over concept strings (an indexed note without concepts then has concept_cos 0);
      a query without known concepts is scored on text alone, score = text_cos.

    BM25 idf is the non-negative variant ln(1 + (N-df+0.5)/(df+0.5)); idf and vocabulary are fixed
    at ``fit`` (a changed corpus means a new index).
    """

    def __init__(
        self,
        method: str = "hybrid",
        k1: float = 1.5,
        b: float = 0.75,
        concept_weight: float = 0.5,
        min_df: int = 1,
        max_features: int | None = 200_000,
    ) -> None:
        self.method = method
        self.k1 = k1
        self.b = b
        self.concept_weight = concept_weight
        self.min_df = min_df
        self.max_features = max_features

    # ------------------------------------------------------------------ validation

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise RetrievalError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        for name in ("k1", "b", "concept_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise RetrievalError(f"{name} must be a finite number, got {v!r}")
        if self.k1 < 0:
            raise RetrievalError(f"k1 must be >= 0, got {self.k1!r}")
        if not 0 <= self.b <= 1:
            raise RetrievalError(f"b must be in [0, 1], got {self.b!r}")
        if not 0 <= self.concept_weight <= 1:
            raise RetrievalError(f"concept_weight must be in [0, 1], got {self.concept_weight!r}")
        if isinstance(self.min_df, bool) or not isinstance(self.min_df, int) or self.min_df < 1:
            raise RetrievalError(f"min_df must be an integer >= 1 (a document count), got {self.min_df!r}")
        mf = self.max_features
        if mf is not None and (isinstance(mf, bool) or not isinstance(mf, int) or mf < 1):
            raise RetrievalError(f"max_features must be None or an integer >= 1, got {mf!r}")

    @staticmethod
    def _validate_inputs(
        texts: Sequence[str], note_ids: Sequence[str], concepts: Sequence[Sequence[str]] | None
    ) -> tuple[list[str], list[str], list[list[str]] | None]:
        if isinstance(texts, str) or isinstance(note_ids, str):
            raise RetrievalError("texts and note_ids must be sequences of strings, not a single string")
        texts_l, ids_l = list(texts), list(note_ids)
        if not texts_l:
            raise RetrievalError("cannot fit an index on zero notes")
        if len(texts_l) != len(ids_l):
            raise RetrievalError(f"length mismatch: {len(texts_l)} texts but {len(ids_l)} note_ids")
        for i, (t, nid) in enumerate(zip(texts_l, ids_l, strict=True)):
            if not isinstance(t, str):
                raise RetrievalError(f"texts[{i}] is {type(t).__name__}, expected str")
            if not isinstance(nid, str) or not nid:
                raise RetrievalError(f"note_ids[{i}] must be a non-empty str, got {nid!r} (convert ids with str())")
        if len(set(ids_l)) != len(ids_l):
            dups = sorted(x for x, c in Counter(ids_l).items() if c > 1)
            raise RetrievalError(f"note_ids must be unique; duplicated: {', '.join(dups[:5])}")
        if concepts is None:
            return texts_l, ids_l, None
        if isinstance(concepts, str):
            raise RetrievalError("concepts must be one sequence of concept strings per note")
        conc_l = list(concepts)
        if len(conc_l) != len(texts_l):
            raise RetrievalError(f"length mismatch: {len(texts_l)} texts but {len(conc_l)} concept lists")
        out: list[list[str]] = []
        for i, c in enumerate(conc_l):
            if isinstance(c, str) or not all(isinstance(x, str) for x in c):
                raise RetrievalError(f"concepts[{i}] must be a sequence of str (one list per note)")
            out.append(normalize_concepts(c))
        return texts_l, ids_l, out

    def _check_fitted(self) -> None:
        if not hasattr(self, "doc_matrix_"):
            raise RetrievalError("the index is not fitted; call fit() or SimilarCaseIndex.load()")

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        texts: Sequence[str],
        note_ids: Sequence[str],
        concepts: Sequence[Sequence[str]] | None = None,
    ) -> SimilarCaseIndex:
        """Learn vocabulary, idf and document vectors of ``texts``; returns ``self``.

        ``concepts`` (one list of concept strings per note) are used by ``"hybrid"`` only.
        """
        self._check_params()
        texts_l, ids_l, conc_l = self._validate_inputs(texts, note_ids, concepts)
        t0 = time.perf_counter()
        try:
            if self.method == "tfidf":
                vec = TfidfVectorizer(
                    lowercase=True,
                    stop_words=None,
                    sublinear_tf=False,
                    min_df=self.min_df,
                    max_features=self.max_features,
                )
                doc = vec.fit_transform(texts_l)
                vocab = {t: int(j) for t, j in vec.vocabulary_.items()}
                idf = np.asarray(vec.idf_, dtype=np.float64)
                avgdl = None
            else:
                counts, vocab = fit_counts((analyze(t) for t in texts_l), len(texts_l), self.min_df, self.max_features)
                if not vocab:
                    raise RetrievalError(
                        f"no terms left to index (min_df={self.min_df}); are the notes empty or all stopwords?"
                    )
                n = counts.shape[0]
                df = np.bincount(counts.indices, minlength=len(vocab)).astype(np.float64)
                idf = np.log1p((n - df + 0.5) / (df + 0.5))
                dl = np.asarray(counts.sum(axis=1)).ravel()
                avgdl = float(dl.mean())
                self.idf_, self.avgdl_ = idf, avgdl
                doc = self._bm25(counts)
                if self.method == "hybrid":
                    doc = normalize(doc, norm="l2", copy=False)
        except ValueError as exc:  # TfidfVectorizer: empty vocabulary / nothing left after min_df pruning
            raise RetrievalError(f"cannot build a vocabulary from these notes: {exc}") from exc

        self.note_ids_ = ids_l
        self.vocabulary_ = vocab
        self.idf_ = idf
        self.avgdl_ = avgdl
        self.doc_matrix_ = sp.csr_matrix(doc, dtype=np.float64)
        self.concept_vocabulary_, self.concept_idf_, self.concept_matrix_ = None, None, None
        if conc_l is not None and self.method != "hybrid":
            log.warning("method %r ignores concepts; only 'hybrid' blends them in", self.method)
        elif conc_l is not None:
            self._fit_concepts(conc_l)
        self._finish()
        log.info(
            "similar-case index (%s) fitted: %d notes, %d terms, %d nonzeros, concepts=%s in %.2f s",
            self.method,
            len(ids_l),
            len(vocab),
            self.doc_matrix_.nnz,
            self.concept_matrix_ is not None,
            time.perf_counter() - t0,
        )
        return self

    def _fit_concepts(self, conc_l: list[list[str]]) -> None:
        vocab_terms = sorted({c for cs in conc_l for c in cs})
        if not vocab_terms:
            log.warning("concepts were given but every list is empty; the index uses text only")
            return
        cvocab = {c: j for j, c in enumerate(vocab_terms)}
        counts = term_counts(conc_l, cvocab)
        n = counts.shape[0]
        df = np.bincount(counts.indices, minlength=len(cvocab)).astype(np.float64)
        cidf = np.log((1.0 + n) / (1.0 + df)) + 1.0  # TfidfVectorizer's smooth idf
        self.concept_vocabulary_ = cvocab
        self.concept_idf_ = cidf
        self.concept_matrix_ = concept_tfidf(counts, cidf)

    def _finish(self) -> None:
        """Derived, unsaved state: id -> row and the column order that breaks ties by note id."""
        self._row_of = {nid: i for i, nid in enumerate(self.note_ids_)}
        self._id_order = np.argsort(np.asarray(self.note_ids_, dtype=str), kind="stable")
        # Inverted indexes (terms x notes): scoring a query touches only the postings of its terms.
        # They double the matrices' memory, which buys a ~10x faster query.
        self._postings = self.doc_matrix_.T.tocsr()
        self._concept_postings = self.concept_matrix_.T.tocsr() if self.concept_matrix_ is not None else None

    def _bm25(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """BM25 term weights idf * tf*(k1+1)/(tf + k1*(1-b+b*dl/avgdl)) of each row of ``counts``."""
        m = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        dl = np.asarray(m.sum(axis=1)).ravel()
        avgdl = self.avgdl_ if self.avgdl_ and self.avgdl_ > 0 else 1.0
        norm = self.k1 * (1.0 - self.b + self.b * dl / avgdl)
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        tf = m.data
        m.data = self.idf_[m.indices] * tf * (self.k1 + 1.0) / (tf + norm[rows])
        return m

    # ------------------------------------------------------------------ scoring

    def _query_vectors(self, text: str) -> sp.csr_matrix:
        """The query in the stored documents' representation (1 x n_terms)."""
        if self.method == "tfidf":
            # TfidfVectorizer's own analyzer, applied to the stored vocabulary and idf: the same
            # transform as the fitted vectorizer, with no vectorizer object to persist.
            terms = _TFIDF_ANALYZER(text)
            q = term_counts([terms], self.vocabulary_)
            q.data *= self.idf_[q.indices]
            return normalize(q, norm="l2", copy=False).tocsr()
        q = self._bm25(term_counts([analyze(text)], self.vocabulary_))
        if self.method == "hybrid":
            q = normalize(q, norm="l2", copy=False).tocsr()
        return q

    def _scores(self, q: sp.csr_matrix, qc: sp.csr_matrix | None) -> np.ndarray:
        """Dense (rows x n_notes) scores in [0, 1] for query vectors ``q`` (and concept vectors ``qc``)."""
        doc = self._postings
        if self.method == "bm25":
            qb = q.copy()
            qb.eliminate_zeros()
            qb.data[:] = 1.0  # each distinct query term counted once
            raw = _dot(qb, doc)
            self_score = np.asarray(q.sum(axis=1)).ravel()
            div = np.maximum(self_score, raw.max(axis=1))
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(div[:, None] > 0, raw / div[:, None], 0.0)
        else:
            s = _dot(q, doc)
            if self.method == "hybrid" and self.concept_matrix_ is not None and qc is not None:
                cs = _dot(qc, self._concept_postings)
                w = np.where(np.diff(qc.indptr) > 0, float(self.concept_weight), 0.0)[:, None]
                s = (1.0 - w) * s + w * cs
        return np.clip(s, 0.0, 1.0)

    def _hits(self, scores: np.ndarray, k: int) -> list[Hit]:
        idx = _top_k(scores[None, :], k, self._id_order)[0]
        return [
            Hit(self.note_ids_[j], float(scores[j]), r)
            for r, j in enumerate((j for j in idx if np.isfinite(scores[j])), start=1)
        ]

    def query(
        self,
        text: str,
        k: int = 5,
        concepts: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Hit]:
        """The ``k`` indexed notes most similar to ``text``, best first (ties by note id).

        ``exclude`` lists note ids to leave out (e.g. the query's own note); unknown ids are
        ignored. Fewer than ``k`` hits come back only when fewer notes remain. A note sharing no
        term with the query scores 0.0 but can still fill the list.
        """
        self._check_fitted()
        k = check_k(k)
        if not isinstance(text, str) or not text.strip():
            raise RetrievalError(f"query text must be a non-empty string, got {text!r:.60}")
        if isinstance(exclude, str) or (concepts is not None and isinstance(concepts, str)):
            raise RetrievalError("exclude and concepts must be sequences of strings, not a single string")
        q = self._query_vectors(text)
        qc = None
        if concepts is not None:
            if not all(isinstance(c, str) for c in concepts):
                raise RetrievalError("concepts must be strings")
            if self.concept_vocabulary_ is None:
                log.debug("query concepts ignored: the index has none (method %r)", self.method)
            else:
                qc = concept_tfidf(
                    term_counts([normalize_concepts(concepts)], self.concept_vocabulary_), self.concept_idf_
                )
        scores = self._scores(q, qc)[0]
        for nid in exclude:
            j = self._row_of.get(nid)
            if j is not None:
                scores[j] = -np.inf
        return self._hits(scores, k)

    def _row_scores(self, rows: np.ndarray) -> np.ndarray:
        """Scores of indexed notes ``rows`` against all notes, from the stored vectors (no re-tokenising)."""
        q = self.doc_matrix_[rows]
        qc = self.concept_matrix_[rows] if self.concept_matrix_ is not None else None
        return self._scores(q, qc)

    def neighbours(self, note_id: str, k: int = 5) -> list[Hit]:
        """The ``k`` notes most similar to the indexed note ``note_id``, itself excluded."""
        self._check_fitted()
        k = check_k(k)
        i = self._row_of.get(note_id) if isinstance(note_id, str) else None
        if i is None:
            raise RetrievalError(f"note_id {note_id!r} is not in the index")
        scores = self._row_scores(np.array([i]))[0]
        scores[i] = -np.inf
        return self._hits(scores, k)

    def neighbours_all(self, k: int, block_rows: int = _BLOCK_ROWS) -> np.ndarray:
        """Row indices (n_notes x k) of each note's k nearest other notes: leave-one-out evaluation.

        Computed ``block_rows`` queries at a time so memory stays at block_rows x n_notes floats;
        the order within a row is the one ``neighbours`` returns.
        """
        self._check_fitted()
        k = check_k(k)
        block_rows = check_k(block_rows, "block_rows")
        n = len(self.note_ids_)
        if k > n - 1:
            raise RetrievalError(f"k={k} needs at least {k + 1} indexed notes, the index has {n}")
        out = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, block_rows):
            rows = np.arange(start, min(start + block_rows, n))
            s = self._row_scores(rows)
            s[np.arange(len(rows)), rows] = -np.inf
            out[rows] = _top_k(s, k, self._id_order)
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` (JSON + npy/npz, no pickle) with a sha256 manifest."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        params = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": self.get_params(),
            "avgdl": self.avgdl_,
            "n_notes": len(self.note_ids_),
            "n_terms": len(self.vocabulary_),
            "has_concepts": self.concept_matrix_ is not None,
        }
        terms = [""] * len(self.vocabulary_)
        for t, j in self.vocabulary_.items():
            terms[j] = t
        written = ["params.json", "note_ids.json", "vocabulary.json", "idf.npy", "doc_matrix.npz"]
        (d / MANIFEST).unlink(missing_ok=True)  # a half-written directory must not verify
        (d / "params.json").write_text(json.dumps(params, indent=1), encoding="utf-8")
        (d / "note_ids.json").write_text(json.dumps(self.note_ids_), encoding="utf-8")
        (d / "vocabulary.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        np.save(d / "idf.npy", np.asarray(self.idf_, dtype=np.float64), allow_pickle=False)
        sp.save_npz(d / "doc_matrix.npz", sp.csr_matrix(self.doc_matrix_), compressed=True)
        if self.concept_matrix_ is not None:
            cterms = [""] * len(self.concept_vocabulary_)
            for c, j in self.concept_vocabulary_.items():
                cterms[j] = c
            (d / "concept_vocabulary.json").write_text(json.dumps(cterms, ensure_ascii=False), encoding="utf-8")
            np.save(d / "concept_idf.npy", np.asarray(self.concept_idf_, dtype=np.float64), allow_pickle=False)
            sp.save_npz(d / "concept_matrix.npz", sp.csr_matrix(self.concept_matrix_), compressed=True)
            written += list(CONCEPT_FILES)
        else:
            for name in CONCEPT_FILES:  # stale files of an earlier save in the same directory
                (d / name).unlink(missing_ok=True)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "files": {f: sha256_file(d / f) for f in written}}
        (d / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        log.info("similar-case index saved to %s (%d files)", d, len(written))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> SimilarCaseIndex:
        """Read an index written by ``save``, verifying every file's sha256 first; never unpickles."""
        d = Path(directory)
        files = verify_manifest(d)
        params = read_json(d, "params.json")
        if not isinstance(params, dict) or params.get("format") != FORMAT:
            raise RetrievalError(f"{d / 'params.json'}: not a similar-case index")
        if params.get("version") != FORMAT_VERSION:
            raise RetrievalError(
                f"{d / 'params.json'}: format version {params.get('version')!r}, this code reads {FORMAT_VERSION}"
            )
        try:
            index = cls(**params["params"])
            index._check_params()
        except (TypeError, KeyError) as exc:
            raise RetrievalError(f"{d / 'params.json'}: bad parameters: {exc}") from exc
        required = ["note_ids.json", "vocabulary.json", "idf.npy", "doc_matrix.npz"]
        if params.get("has_concepts"):
            required += list(CONCEPT_FILES)
        missing = [f for f in required if f not in files]
        if missing:
            raise RetrievalError(f"{d / MANIFEST}: does not list required file(s) {', '.join(missing)}")

        note_ids = read_json(d, "note_ids.json")
        terms = read_json(d, "vocabulary.json")
        if not (isinstance(note_ids, list) and all(isinstance(x, str) for x in note_ids)) or len(set(note_ids)) != len(
            note_ids
        ):
            raise RetrievalError(f"{d / 'note_ids.json'}: expected a list of unique strings")
        if not (isinstance(terms, list) and all(isinstance(x, str) for x in terms)):
            raise RetrievalError(f"{d / 'vocabulary.json'}: expected a list of strings")
        idf = read_npy(d, "idf.npy", (len(terms),))
        doc = read_csr(d, "doc_matrix.npz", (len(note_ids), len(terms)))
        index.note_ids_ = note_ids
        index.vocabulary_ = {t: j for j, t in enumerate(terms)}
        index.idf_ = idf
        avgdl = params.get("avgdl")
        index.avgdl_ = float(avgdl) if avgdl is not None else None
        if index.method != "tfidf" and index.avgdl_ is None:
            raise RetrievalError(f"{d / 'params.json'}: BM25 index without avgdl")
        index.doc_matrix_ = doc
        index.concept_vocabulary_, index.concept_idf_, index.concept_matrix_ = None, None, None
        if params.get("has_concepts"):
            cterms = read_json(d, "concept_vocabulary.json")
            if not (isinstance(cterms, list) and all(isinstance(x, str) for x in cterms)):
                raise RetrievalError(f"{d / 'concept_vocabulary.json'}: expected a list of strings")
            index.concept_vocabulary_ = {c: j for j, c in enumerate(cterms)}
            index.concept_idf_ = read_npy(d, "concept_idf.npy", (len(cterms),))
            index.concept_matrix_ = read_csr(d, "concept_matrix.npz", (len(note_ids), len(cterms)))
        index._finish()
        log.info("similar-case index (%s) loaded from %s: %d notes", index.method, d, len(note_ids))
        return index
