"""A token trie and its leftmost-longest walk: the dictionary matcher both the hand lexicons
(``entities.TermMatcher``) and the terminologies (``terminology.TermIndex``) use.

One walk per start token instead of a tuple built and probed at every length: 7.9 to 11.6 times
faster on the terminology index with the same matches (``benchmarks/medical_records.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

END = ""
"""The key under which a node holds the hit of the term that ends there (no token is empty)."""


def build_trie(items: Iterable[tuple[Sequence[str], Any]]) -> dict[str, Any]:
    """A nested dict over token sequences; the node where a sequence ends holds its hit."""
    root: dict[str, Any] = {}
    for toks, hit in items:
        node = root
        for tok in toks:
            node = node.setdefault(tok, {})
        node[END] = hit
    return root


def longest_matches(trie: dict[str, Any], keys: Sequence[str],
                    accept: Callable[[Any, int], bool] | None = None) -> list[tuple[int, int, Any]]:
    """(first key, last key inclusive, hit) of the leftmost-longest non-overlapping matches of
    ``keys``; ``accept(hit, start)`` may refuse a hit (a capitals rule), a shorter one then counts."""
    out: list[tuple[int, int, Any]] = []
    i, n = 0, len(keys)
    while i < n:
        node = trie.get(keys[i])
        best = None
        j = i
        while node is not None:
            hit = node.get(END)
            if hit is not None and (accept is None or accept(hit, i)):
                best = (j, hit)
            j += 1
            if j >= n:
                break
            node = node.get(keys[j])
        if best is None:
            i += 1
        else:
            out.append((i, best[0], best[1]))
            i = best[0] + 1
    return out


__all__ = ["END", "build_trie", "longest_matches"]
