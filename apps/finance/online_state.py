"""Online feature state in Redis, shared by several scoring workers.

Same contract as ``features.InMemoryState`` (``load`` / ``append`` / ``set_label``), so the
feature arithmetic is the one function ``features.online_vector`` whatever the store.

Layout (``prefix`` default ``trillium:fin``), every key expiring after the horizon:

* ``{p}:c:{card}``: list of ``"sec:cents:tx_id"``, oldest first (the card's history);
* ``{p}:t:{terminal}``: list of ``"sec:tx_id"`` (the terminal's history);
* ``{p}:s:{card}``: list of the card's last ``seq_len`` feature vectors (float32 bytes);
* ``{p}:lbl:{tx_id}``: "1" for a transaction known to be fraud (labels are rare, so only
  frauds are stored; a "genuine" label deletes the key); it expires with the horizon too.

One transaction costs two round trips: read the three lists; then read the labels of the
transactions inside the delayed windows and, in the same pipeline, append and trim.

Consistency: a card's transactions must be scored in time order. With several workers, route
a card to one worker (e.g. partition by card) or accept that two simultaneous transactions
of one card may not see each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trillium.core.errors import ConfigError
from trillium.finance.features import CardHistory, TerminalHistory


class RedisState:
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "trillium:fin",
                 horizon_seconds: int = 37 * 86_400, client: Any = None) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the extra is part of dev
            raise ConfigError("Redis online state needs the 'redis' extra: pip install 'trillium[redis]'") from exc
        self.client = client or redis.Redis.from_url(url)
        self.prefix = prefix
        self.horizon = int(horizon_seconds)
        try:
            self.client.ping()
        except Exception as exc:
            raise ConfigError(f"cannot reach Redis at {url}: {exc}") from exc
        self._pending: dict[str, Any] = {}

    def _k(self, kind: str, ident: Any) -> str:
        return f"{self.prefix}:{kind}:{ident}"

    def load(self, card_id: Any, terminal_id: Any, cutoff: int) -> tuple[CardHistory, TerminalHistory]:
        ck, tk, sk = self._k("c", card_id), self._k("t", terminal_id), self._k("s", card_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(ck, 0, -1)
        pipe.lrange(tk, 0, -1)
        pipe.lrange(sk, 0, -1)
        c_raw, t_raw, s_raw = pipe.execute()
        c_entries = [e.split(b":", 2) for e in c_raw]
        t_entries = [e.split(b":", 1) for e in t_raw]
        c_drop = sum(1 for e in c_entries if int(e[0]) <= cutoff)
        t_drop = sum(1 for e in t_entries if int(e[0]) <= cutoff)
        c_entries, t_entries = c_entries[c_drop:], t_entries[t_drop:]
        self._pending = {"ck": ck, "tk": tk, "sk": sk, "c_drop": c_drop, "t_drop": t_drop,
                         "c_ids": [e[2] for e in c_entries], "t_ids": [e[1] for e in t_entries]}
        ids = list({*self._pending["c_ids"], *self._pending["t_ids"]})
        frauds: set[bytes] = set()
        if ids:
            hits = self.client.mget([self._k("lbl", i.decode()) for i in ids])
            frauds = {i for i, h in zip(ids, hits, strict=True) if h == b"1"}
        card = CardHistory(
            times=[int(e[0]) for e in c_entries], cents=[int(e[1]) for e in c_entries],
            frauds=[1 if e[2] in frauds else 0 for e in c_entries],
            seq=[np.frombuffer(b, dtype=np.float32) for b in s_raw],
        )
        term = TerminalHistory(times=[int(e[0]) for e in t_entries],
                               frauds=[1 if e[1] in frauds else 0 for e in t_entries])
        return card, term

    def append(self, card_id: Any, terminal_id: Any, tx_id: Any, sec: int, cents: int, fraud: int,
               vector: np.ndarray, seq_len: int) -> None:
        p = self._pending
        if p.get("ck") != self._k("c", card_id):
            raise RuntimeError("RedisState.append must follow load() of the same card")
        pipe = self.client.pipeline(transaction=True)
        if p["c_drop"]:
            pipe.ltrim(p["ck"], p["c_drop"], -1)
        if p["t_drop"]:
            pipe.ltrim(p["tk"], p["t_drop"], -1)
        pipe.rpush(p["ck"], f"{sec}:{cents}:{tx_id}")
        pipe.rpush(p["tk"], f"{sec}:{tx_id}")
        pipe.rpush(p["sk"], vector.astype(np.float32).tobytes())
        pipe.ltrim(p["sk"], -seq_len, -1)
        if fraud:
            pipe.set(self._k("lbl", tx_id), "1", ex=self.horizon)
        for key in (p["ck"], p["tk"], p["sk"]):
            pipe.expire(key, self.horizon)
        pipe.execute()
        self._pending = {}

    def set_label(self, tx_id: Any, fraud: bool) -> bool:
        """Store the label (even for a transaction not seen yet); always True."""
        key = self._k("lbl", tx_id)
        if fraud:
            self.client.set(key, "1", ex=self.horizon)
        else:
            self.client.delete(key)
        return True

    def clear(self) -> int:
        """Delete every key under the prefix (tests, or a reset of the online state)."""
        n = 0
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            n += self.client.delete(key)
        return n
