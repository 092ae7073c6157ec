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

Consistency: ``load``/``append`` (one caller at a time per card) are the simple path. Several
workers use ``load_many``/``commit_many``: the load also reads a version counter of the card and
of the terminal and any stored result of the transaction; the commit is one Lua script that
applies the transaction only if neither version moved since the load (else the caller reloads
and recomputes: optimistic concurrency), refuses a transaction id it already applied (returning
the stored result: exactly once, whichever worker retries it), counts the day's alerts against
the budget and stores the result, all atomically. Every key of one transaction must live on one
Redis server (a single Redis or a primary with replicas, not a sharded cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trillium.core.errors import ConfigError, InputValidationError
from trillium.finance.features import CardHistory, TerminalHistory

# Both scripts build their key names from the prefix (one Redis server, not a sharded cluster)
# and take one argument string per transaction, fields separated by \x1f: each argument costs
# the Python client microseconds to encode, so fewer arguments is most of the client's time.
_SPLIT = """
local function fields(s)
  local t, i = {}, 1
  while true do
    local j = string.find(s, '\\31', i, true)
    if not j then t[#t + 1] = string.sub(s, i); return t end
    t[#t + 1] = string.sub(s, i, j - 1); i = j + 1
  end
end
"""

# ARGV[1]: key prefix; then per transaction "card\x1fterminal\x1ftx_id\x1fcutoff\x1flabels_until".
# Returns eleven flat values per transaction: card times and cents (comma-joined), card fraud
# flags ("0110"), terminal times (comma-joined), terminal fraud flags, the sequence rows (their
# float32 bytes end to end), both versions, the stored result ("" if none), both drop counts.
# Flat strings, not nested arrays: parsing a reply element costs the Python client microseconds,
# and a card's history is hundreds of them.
_LOAD = _SPLIT + """
local p = ARGV[1]
local out = {}
for a = 2, #ARGV do
  local f = fields(ARGV[a])
  local card, term, tx = f[1], f[2], f[3]
  local cutoff, until_ = tonumber(f[4]), tonumber(f[5])
  local c = redis.call('LRANGE', p .. ':c:' .. card, 0, -1)
  local t = redis.call('LRANGE', p .. ':t:' .. term, 0, -1)
  local ct, cc, cf, tt, tf = {}, {}, {}, {}, {}
  local cd, td = 0, 0
  for j = 1, #c do
    local sec, cents, id = string.match(c[j], '^(%-?%d+):(%-?%d+):(.*)$')
    sec = tonumber(sec)
    if sec <= cutoff then cd = cd + 1 else
      ct[#ct + 1] = sec; cc[#cc + 1] = tonumber(cents)
      local fr = 0
      if sec <= until_ and redis.call('EXISTS', p .. ':lbl:' .. id) == 1 then fr = 1 end
      cf[#cf + 1] = fr
    end
  end
  for j = 1, #t do
    local sec, id = string.match(t[j], '^(%-?%d+):(.*)$')
    sec = tonumber(sec)
    if sec <= cutoff then td = td + 1 else
      tt[#tt + 1] = sec
      local fr = 0
      if sec <= until_ and redis.call('EXISTS', p .. ':lbl:' .. id) == 1 then fr = 1 end
      tf[#tf + 1] = fr
    end
  end
  out[#out + 1] = table.concat(ct, ',')
  out[#out + 1] = table.concat(cc, ',')
  out[#out + 1] = table.concat(cf, '')
  out[#out + 1] = table.concat(tt, ',')
  out[#out + 1] = table.concat(tf, '')
  out[#out + 1] = table.concat(redis.call('LRANGE', p .. ':s:' .. card, 0, -1), '')
  out[#out + 1] = redis.call('GET', p .. ':cv:' .. card) or '0'
  out[#out + 1] = redis.call('GET', p .. ':tv:' .. term) or '0'
  out[#out + 1] = redis.call('GET', p .. ':res:' .. tx) or ''
  out[#out + 1] = cd
  out[#out + 1] = td
end
return out
"""

# ARGV[1..3]: key prefix, horizon seconds, daily alert budget (-1: none); then three per
# transaction: "card\x1fterminal\x1ftx_id\x1fsec\x1fcents\x1ffraud\x1fcard version\x1fterminal
# version\x1fcard drop\x1fterminal drop\x1falert\x1fseq_len", the sequence row's bytes, the result
# JSON. Returns per transaction {status, stored}: ok (applied), dup (this id was applied before:
# its stored result) or retry (the card or terminal moved since the load: nothing applied).
_COMMIT = _SPLIT + """
local p, horizon, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for a = 4, #ARGV, 3 do
  local f = fields(ARGV[a])
  local card, term, tx, sec = f[1], f[2], f[3], tonumber(f[4])
  local ck, tk, sk = p .. ':c:' .. card, p .. ':t:' .. term, p .. ':s:' .. card
  local cvk, tvk, rk = p .. ':cv:' .. card, p .. ':tv:' .. term, p .. ':res:' .. tx
  local stored = redis.call('GET', rk)
  if stored then
    out[#out + 1] = {'dup', stored}
  elseif (redis.call('GET', cvk) or '0') ~= f[7] or (redis.call('GET', tvk) or '0') ~= f[8] then
    out[#out + 1] = {'retry', ''}
  else
    if tonumber(f[9]) > 0 then redis.call('LTRIM', ck, tonumber(f[9]), -1) end
    if tonumber(f[10]) > 0 then redis.call('LTRIM', tk, tonumber(f[10]), -1) end
    redis.call('RPUSH', ck, f[4] .. ':' .. f[5] .. ':' .. tx)
    redis.call('RPUSH', tk, f[4] .. ':' .. tx)
    redis.call('RPUSH', sk, ARGV[a + 1])
    redis.call('LTRIM', sk, -tonumber(f[12]), -1)
    if f[6] == '1' then redis.call('SET', p .. ':lbl:' .. tx, '1', 'EX', horizon) end
    redis.call('EXPIRE', ck, horizon); redis.call('EXPIRE', tk, horizon); redis.call('EXPIRE', sk, horizon)
    redis.call('INCR', cvk); redis.call('EXPIRE', cvk, horizon)
    redis.call('INCR', tvk); redis.call('EXPIRE', tvk, horizon)
    local decision = 'pass'
    if f[11] == '1' then
      decision = 'alert'
      if budget >= 0 then
        local dk = p .. ':alerts:' .. math.floor(sec / 86400)
        local used = redis.call('INCR', dk)
        redis.call('EXPIRE', dk, 3 * 86400)
        if used > budget then decision = 'over_budget' end
      end
    end
    stored = decision .. '|' .. ARGV[a + 2]
    redis.call('SET', rk, stored, 'EX', horizon)
    out[#out + 1] = {'ok', stored}
  end
end
return out
"""


@dataclass
class LoadedState:
    """What ``load_many`` read for one transaction: its histories and what the commit checks."""

    card: CardHistory
    terminal: TerminalHistory
    card_version: bytes
    terminal_version: bytes
    card_drop: int
    terminal_drop: int
    stored: bytes | None  # the result already stored for this transaction id (a retry)


@dataclass
class Commit:
    """One transaction to apply with ``commit_many`` (after ``load_many`` gave ``loaded``)."""

    card_id: Any
    terminal_id: Any
    tx_id: Any
    sec: int
    cents: int
    fraud: int
    vector: np.ndarray
    seq_len: int
    loaded: LoadedState
    alert: bool
    budget: int | None
    result_json: str


_SEP = "\x1f"
_ZERO = ord("0")


def _ints(joined: bytes) -> list[int]:
    return [int(v) for v in joined.split(b",")] if joined else []


def _rows(blob: bytes, width: int) -> list[np.ndarray]:
    if not blob:
        return []
    return list(np.frombuffer(blob, dtype=np.float32).reshape(-1, width))


def _ident(value: Any) -> str:
    text = str(value)
    if _SEP in text or "\x00" in text:
        raise InputValidationError(f"identifier {text!r} holds a control character (\\x1f or \\x00)")
    return text


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

    # ------------------------------------------------------------ several workers
    def load_many(self, items: list[tuple[Any, Any, Any, int, int]], seq_width: int) -> list[LoadedState]:
        """Histories of ``(card, terminal, tx_id, cutoff, labels_until)`` items (distinct cards and
        terminals) in one round trip whatever their number: a Lua script reads the lists, versions
        and stored results, drops entries at or before ``cutoff`` and looks up the fraud labels of
        the entries at or before ``labels_until`` (the only ones the delayed windows read).
        ``seq_width``: floats per stored sequence row."""
        if not items:
            return []
        args: list[Any] = [self.prefix]
        for card_id, terminal_id, tx_id, cutoff, labels_until in items:
            args.append(_SEP.join((_ident(card_id), _ident(terminal_id), _ident(tx_id), str(cutoff),
                                   str(labels_until))))
        raw = self._script("_load", _LOAD)(keys=[], args=args)
        out = []
        for i in range(0, len(raw), 11):
            ct, cc, cf, tt, tf, seq, cv, tv, stored, c_drop, t_drop = raw[i:i + 11]
            card = CardHistory(times=_ints(ct), cents=_ints(cc), frauds=[c - _ZERO for c in cf], seq=_rows(seq, seq_width))
            out.append(LoadedState(card, TerminalHistory(times=_ints(tt), frauds=[c - _ZERO for c in tf]), cv, tv,
                                   int(c_drop), int(t_drop), stored or None))
        return out

    def commit_many(self, commits: list[Commit]) -> list[tuple[str, bytes]]:
        """Apply each commit atomically, all in one round trip: ``("ok", stored)`` when applied,
        ``("dup", stored)`` when its id was applied before, ``("retry", b"")`` when its card or
        terminal changed since the load (reload and recompute it). ``stored`` is
        ``b"<decision>|<result JSON>"``, the decision counted against the day's budget."""
        if not commits:
            return []
        budget = commits[0].budget
        args: list[Any] = [self.prefix, self.horizon, -1 if budget is None else int(budget)]
        for c in commits:
            ld = c.loaded
            meta = _SEP.join((_ident(c.card_id), _ident(c.terminal_id), _ident(c.tx_id), str(c.sec), str(c.cents),
                              "1" if c.fraud else "0", ld.card_version.decode(), ld.terminal_version.decode(),
                              str(ld.card_drop), str(ld.terminal_drop), "1" if c.alert else "0", str(c.seq_len)))
            args += [meta, c.vector.astype(np.float32).tobytes(), c.result_json]
        raw = self._script("_commit", _COMMIT)(keys=[], args=args)
        return [(status.decode(), stored) for status, stored in raw]

    def _script(self, name: str, source: str) -> Any:
        script = getattr(self, name, None)
        if script is None:
            script = self.client.register_script(source)
            setattr(self, name, script)
        return script

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
