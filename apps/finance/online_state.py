"""Online feature state in Redis, shared by several scoring workers.

Same contract as ``features.InMemoryState`` (``load`` / ``append`` / ``set_label``), so the
feature arithmetic is the one function ``features.online_vector`` whatever the store.

Layout (``prefix`` default ``trillium:fin``), every key expiring after the horizon:

* ``{p}:ch:{card}``: the card's version (16 decimal digits) then its history, oldest first, as
  fixed 24-byte records (sec, cents, tx hash: little-endian int64, int64, uint64);
* ``{p}:th:{terminal}``: the terminal's version then its history, 16-byte records (sec, tx hash);
* ``{p}:cf:{card}`` / ``{p}:tf:{terminal}``: the hashes of the card's / terminal's transactions
  labelled fraud (a set; labels are rare, so it is usually absent);
* ``{p}:s:{card}``: list of the card's last ``seq_len`` sequence rows (float32 bytes);
* ``{p}:tx:{tx_id}``: the card, terminal and hash of an applied transaction, so a label given
  later by id reaches the two sets; ``{p}:lbl:{tx_id}``: a fraud label given before the
  transaction arrived (applied when it does);
* ``{p}:res:{tx_id}``: the stored answer; ``{p}:alerts:{day}``: the day's alert count.

Why records in one string and not a list of ``"sec:cents:id"`` entries (the first layout): the
load then costs Redis one GET per history instead of a string match and a label lookup per entry
(measured on the service benchmark's traffic: about 2.2 ms of Redis time per Lua call before,
with 70-entry card histories), and the client parses a history with one ``numpy.frombuffer``.
The version sits in the history's own string so that checking and moving it costs no extra
Redis call. The tx hash is the first 8 bytes of BLAKE2b of the id's text; it only joins labels to history
entries of one card or terminal, where a collision (about n²/2⁶⁴) does not happen in practice.

Consistency: ``load``/``append`` (one caller at a time per card) are the simple path. Several
workers use ``load_many``/``commit_many``: the load also gives the versions of the card and of
the terminal and any stored result of the transaction; the commit is one Lua script that
applies the transaction only if neither version moved since the load (else the caller reloads
and recomputes: optimistic concurrency), refuses a transaction id it already applied (returning
the stored result: exactly once, whichever worker retries it), counts the day's alerts against
the budget and stores the result, all atomically. Every key of one transaction must live on one
Redis server (a single Redis or a primary with replicas, not a sharded cluster).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from trillium.core.errors import ConfigError, InputValidationError
from trillium.finance.features import CardHistory, TerminalHistory

# Every script builds its key names from the prefix (one Redis server, not a sharded cluster)
# and takes one argument string per transaction, fields separated by \x1f: each argument costs
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

# ARGV[1]: key prefix, ARGV[2]: "1" to read the sequence rows; then per transaction
# "card\x1fterminal\x1ftx_id". Returns seven flat values per transaction: the card's and the
# terminal's strings (version and history), their fraud hashes (comma-joined), the sequence rows
# (float32 bytes end to end, or "") and their number, and the stored result ("" if none).
_LOAD = _SPLIT + """
local p, want_seq = ARGV[1], ARGV[2] == '1'
local out = {}
for a = 3, #ARGV do
  local f = fields(ARGV[a])
  local card, term = f[1], f[2]
  out[#out + 1] = redis.call('GET', p .. ':ch:' .. card) or ''
  out[#out + 1] = redis.call('GET', p .. ':th:' .. term) or ''
  out[#out + 1] = table.concat(redis.call('SMEMBERS', p .. ':cf:' .. card), ',')
  out[#out + 1] = table.concat(redis.call('SMEMBERS', p .. ':tf:' .. term), ',')
  if want_seq then
    local rows = redis.call('LRANGE', p .. ':s:' .. card, 0, -1)
    out[#out + 1] = table.concat(rows, '')
    out[#out + 1] = #rows
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
  end
  out[#out + 1] = redis.call('GET', p .. ':res:' .. f[3]) or ''
end
return out
"""

# ARGV[1..3]: key prefix, horizon seconds, daily alert budget (-1: none); then three per
# transaction: "card\x1fterminal\x1ftx_id\x1fsec\x1ftx hash\x1ffraud\x1fcard version\x1fterminal
# version\x1fcard drop\x1fterminal drop\x1falert\x1fseq_len\x1fcheck versions", the two history
# records (24 + 16 bytes) then the sequence row's bytes, the result JSON ("" to store none).
# Returns per transaction {status, stored}: ok (applied), dup (this id was applied before: its
# stored result) or retry (the card or terminal moved since the load: nothing applied).
_COMMIT = _SPLIT + """
local p, horizon, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- the next version, the history after its first `drop` records, the new record
local function push(key, cur, rec, drop, width)
  local v = 0
  if #cur >= 16 then v = tonumber(string.sub(cur, 1, 16)) end
  redis.call('SET', key, string.format('%016d', v + 1) .. string.sub(cur, 17 + drop * width) .. rec, 'EX', horizon)
end
local out = {}
for a = 4, #ARGV, 3 do
  local f = fields(ARGV[a])
  local card, term, tx, sec, h = f[1], f[2], f[3], tonumber(f[4]), f[5]
  local ck, tk, rk = p .. ':ch:' .. card, p .. ':th:' .. term, p .. ':res:' .. tx
  local stored = redis.call('GET', rk)
  local cur_c, cur_t
  if not stored then
    cur_c, cur_t = redis.call('GET', ck) or '', redis.call('GET', tk) or ''
  end
  if stored then
    out[#out + 1] = {'dup', stored}
  elseif f[13] == '1' and (string.sub(cur_c, 1, 16) ~= f[7] or string.sub(cur_t, 1, 16) ~= f[8]) then
    out[#out + 1] = {'retry', ''}
  else
    local blob = ARGV[a + 1]
    push(ck, cur_c, string.sub(blob, 1, 24), tonumber(f[9]), 24)
    push(tk, cur_t, string.sub(blob, 25, 40), tonumber(f[10]), 16)
    local seq_len = tonumber(f[12])
    if seq_len > 0 then
      local sk = p .. ':s:' .. card
      redis.call('RPUSH', sk, string.sub(blob, 41))
      redis.call('LTRIM', sk, -seq_len, -1)
      redis.call('EXPIRE', sk, horizon)
    end
    if f[6] == '1' or redis.call('EXISTS', p .. ':lbl:' .. tx) == 1 then
      redis.call('SADD', p .. ':cf:' .. card, h); redis.call('EXPIRE', p .. ':cf:' .. card, horizon)
      redis.call('SADD', p .. ':tf:' .. term, h); redis.call('EXPIRE', p .. ':tf:' .. term, horizon)
    end
    redis.call('SET', p .. ':tx:' .. tx, card .. '\\31' .. term .. '\\31' .. h, 'EX', horizon)
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
    if ARGV[a + 2] ~= '' then redis.call('SET', rk, stored, 'EX', horizon) end
    out[#out + 1] = {'ok', stored}
  end
end
return out
"""

# ARGV: key prefix, horizon, tx_id, "1" fraud / "0" genuine. The label reaches the card's and the
# terminal's fraud sets when the transaction was applied; a fraud label of a transaction not seen
# yet waits in {p}:lbl:{tx_id} for it.
_LABEL = """
local p, horizon, tx, fraud = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local info = redis.call('GET', p .. ':tx:' .. tx)
if fraud then redis.call('SET', p .. ':lbl:' .. tx, '1', 'EX', horizon) else redis.call('DEL', p .. ':lbl:' .. tx) end
if info then
  local i = string.find(info, '\\31', 1, true)
  local j = string.find(info, '\\31', i + 1, true)
  local card, term, h = string.sub(info, 1, i - 1), string.sub(info, i + 1, j - 1), string.sub(info, j + 1)
  if fraud then
    redis.call('SADD', p .. ':cf:' .. card, h); redis.call('EXPIRE', p .. ':cf:' .. card, horizon)
    redis.call('SADD', p .. ':tf:' .. term, h); redis.call('EXPIRE', p .. ':tf:' .. term, horizon)
  else
    redis.call('SREM', p .. ':cf:' .. card, h); redis.call('SREM', p .. ':tf:' .. term, h)
  end
  return 1
end
return 0
"""

_CARD = np.dtype([("sec", "<i8"), ("cents", "<i8"), ("h", "<u8")])
_TERM = np.dtype([("sec", "<i8"), ("h", "<u8")])
_RECORDS = struct.Struct("<qqQqQ")  # the card's record, then the terminal's
_VERSION = 16  # decimal digits of the version at the head of a history string


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


def tx_hash(tx_id: Any) -> int:
    """The 64-bit hash that joins a transaction's label to its history entries."""
    return int.from_bytes(hashlib.blake2b(str(tx_id).encode(), digest_size=8).digest(), "little")


def _hashes(joined: bytes) -> np.ndarray:
    return np.array([int(v) for v in joined.split(b",")], dtype=np.uint64) if joined else np.empty(0, np.uint64)


def _ident(value: Any) -> str:
    text = str(value)
    if _SEP in text or "\x00" in text:
        raise InputValidationError(f"identifier {text!r} holds a control character (\\x1f or \\x00)")
    return text


def _histories(ch: bytes, th: bytes, cf: bytes, tf: bytes, seq: bytes, n_rows: int, cutoff: int
               ) -> tuple[CardHistory, TerminalHistory, int, int]:
    """Decode one transaction's loaded strings (after their 16-byte versions); entries at or
    before ``cutoff`` are dropped (and counted, so the commit trims them)."""
    c = np.frombuffer(ch, dtype=_CARD, offset=_VERSION) if ch else np.empty(0, _CARD)
    t = np.frombuffer(th, dtype=_TERM, offset=_VERSION) if th else np.empty(0, _TERM)
    c_drop = int(np.searchsorted(c["sec"], cutoff, side="right"))
    t_drop = int(np.searchsorted(t["sec"], cutoff, side="right"))
    c, t = c[c_drop:], t[t_drop:]
    c_fraud = np.isin(c["h"], _hashes(cf)).astype(np.int64) if cf else np.zeros(len(c), np.int64)
    t_fraud = np.isin(t["h"], _hashes(tf)).astype(np.int64) if tf else np.zeros(len(t), np.int64)
    rows = list(np.frombuffer(seq, dtype=np.float32).reshape(n_rows, -1)) if n_rows else []
    card = CardHistory(times=c["sec"].tolist(), cents=c["cents"].tolist(), frauds=c_fraud.tolist(), seq=rows)
    return card, TerminalHistory(times=t["sec"].tolist(), frauds=t_fraud.tolist()), c_drop, t_drop


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
        self._pending: LoadedState | None = None
        self._pending_card: Any = None

    # ------------------------------------------------------------ one caller per card
    def load(self, card_id: Any, terminal_id: Any, cutoff: int) -> tuple[CardHistory, TerminalHistory]:
        """The card's and terminal's histories after ``cutoff`` (``append`` must follow)."""
        loaded = self.load_many([(card_id, terminal_id, "", cutoff, cutoff)], 1)[0]
        self._pending, self._pending_card = loaded, card_id
        return loaded.card, loaded.terminal

    def append(self, card_id: Any, terminal_id: Any, tx_id: Any, sec: int, cents: int, fraud: int,
               vector: np.ndarray, seq_len: int) -> None:
        """Apply one transaction after ``load`` of its card (no version check: one caller)."""
        if self._pending is None or self._pending_card != card_id:
            raise RuntimeError("RedisState.append must follow load() of the same card")
        commit = Commit(card_id, terminal_id, tx_id, sec, cents, fraud, vector, seq_len, self._pending, False, None, "")
        self._commit([commit], check_versions=False)
        self._pending = None

    # ------------------------------------------------------------ several workers
    def load_many(self, items: list[tuple[Any, Any, Any, int, int]], seq_width: int) -> list[LoadedState]:
        """Histories of ``(card, terminal, tx_id, cutoff, labels_until)`` items (distinct cards and
        terminals) in one round trip whatever their number: a Lua script reads the history strings,
        fraud sets, versions and stored results; entries at or before ``cutoff`` are dropped here.
        ``labels_until`` is kept for callers; every known label is returned (the features only
        read labels older than their delay). ``seq_width``: 0 when the model reads no sequence
        (the rows are then not read), else the floats per row."""
        if not items:
            return []
        args: list[Any] = [self.prefix, "1" if seq_width else "0"]
        for card_id, terminal_id, tx_id, _cutoff, _ in items:
            args.append(_SEP.join((_ident(card_id), _ident(terminal_id), _ident(tx_id))))
        raw = self._script("_load_lua", _LOAD)(keys=[], args=args)
        out = []
        for n, item in enumerate(items):
            ch, th, cf, tf, seq, n_rows, stored = raw[7 * n:7 * n + 7]
            card, term, c_drop, t_drop = _histories(ch, th, cf, tf, seq, int(n_rows), item[3])
            out.append(LoadedState(card, term, ch[:_VERSION], th[:_VERSION], c_drop, t_drop, stored or None))
        return out

    def commit_many(self, commits: list[Commit]) -> list[tuple[str, bytes]]:
        """Apply each commit atomically, all in one round trip: ``("ok", stored)`` when applied,
        ``("dup", stored)`` when its id was applied before, ``("retry", b"")`` when its card or
        terminal changed since the load (reload and recompute it). ``stored`` is
        ``b"<decision>|<result JSON>"``, the decision counted against the day's budget."""
        return self._commit(commits, check_versions=True)

    def _commit(self, commits: list[Commit], *, check_versions: bool) -> list[tuple[str, bytes]]:
        if not commits:
            return []
        budget = commits[0].budget
        check = "1" if check_versions else "0"
        args: list[Any] = [self.prefix, self.horizon, -1 if budget is None else int(budget)]
        for c in commits:
            ld = c.loaded
            h = tx_hash(c.tx_id)
            meta = _SEP.join((_ident(c.card_id), _ident(c.terminal_id), _ident(c.tx_id), str(c.sec), str(h),
                              "1" if c.fraud else "0", ld.card_version.decode(), ld.terminal_version.decode(),
                              str(ld.card_drop), str(ld.terminal_drop), "1" if c.alert else "0", str(c.seq_len),
                              check))
            records = _RECORDS.pack(c.sec, c.cents, h, c.sec, h)
            args += [meta, records + c.vector.astype(np.float32).tobytes(), c.result_json]
        raw = self._script("_commit_lua", _COMMIT)(keys=[], args=args)
        return [(status.decode(), stored) for status, stored in raw]

    def _script(self, name: str, source: str) -> Any:
        script = getattr(self, name, None)
        if script is None:
            script = self.client.register_script(source)
            setattr(self, name, script)
        return script

    def set_label(self, tx_id: Any, fraud: bool) -> bool:
        """Store the label (even for a transaction not seen yet: it applies when it comes); True."""
        self._script("_label_lua", _LABEL)(keys=[], args=[self.prefix, self.horizon, _ident(tx_id), "1" if fraud else "0"])
        return True

    def terminal_hashes(self, terminal_id: Any) -> list[int]:
        """The ``tx_hash`` of each transaction in the terminal's history, in the order applied
        (an audit of what the state holds; the tests check exactly-once with it)."""
        raw = self.client.get(f"{self.prefix}:th:{_ident(terminal_id)}") or b""
        return [int(h) for h in np.frombuffer(raw, dtype=_TERM, offset=_VERSION)["h"]] if raw else []

    def clear(self) -> int:
        """Delete every key under the prefix (tests, or a reset of the online state)."""
        n = 0
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            n += self.client.delete(key)
        return n
