"""Error fingerprints and the bounded table of error patterns.

A failed request's message is *normalized* (ids, hex strings, numbers and quoted values
become placeholders) so that ``"req_8fj2k1: rate limit, retry in 20s"`` and
``"req_a91bb0: rate limit, retry in 7s"`` share one *fingerprint*: a short hash of the
error type, the endpoint and the normalized message. ``ErrorPatterns`` counts errors per
fingerprint, with first/last seen, affected models and status codes, in bounded memory.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections import OrderedDict
from typing import Final

import msgspec

__all__ = [
    "MAX_MODELS_PER_PATTERN",
    "MAX_NORMALIZED_INPUT",
    "MESSAGE_CACHE_SIZE",
    "MAX_SAMPLE_CHARS",
    "MAX_STATUS_CODES_PER_PATTERN",
    "ErrorPattern",
    "ErrorPatterns",
    "ErrorPatternsSnapshot",
    "fingerprint",
    "normalize_message",
]

MAX_SAMPLE_CHARS: Final = 500
"""A pattern keeps one sample message, cut to this many characters."""

MAX_NORMALIZED_INPUT: Final = 4096
"""``ErrorPatterns.observe`` normalizes at most this many leading characters of a message
(the wire format caps ``error_message`` at 4096 too), bounding the regex work per error."""

MESSAGE_CACHE_SIZE: Final = 1024
"""``ErrorPatterns`` remembers the fingerprints of this many distinct raw messages (LRU),
and of as many normalized ones (a memo cleared when full), so at most 8 Mi characters of
messages (``MAX_NORMALIZED_INPUT`` each)."""

MAX_MODELS_PER_PATTERN: Final = 20
MAX_STATUS_CODES_PER_PATTERN: Final = 20

# --- normalization ----------------------------------------------------------------------
#
# Order matters: quoted values first (a quoted id or number is one value), then UUIDs,
# request ids and long hex strings (which contain digits), then the remaining numbers.
#
# Idempotence: every replaced span begins and ends with a word character (or a quote), and
# its placeholder begins with ``<`` and ends with ``>``. The token boundaries below treat
# ``>`` on the left and ``<`` on the right like word characters, so a placeholder never
# creates a boundary the replaced text did not have, and a second pass matches nothing.
_L: Final = r"(?<![A-Za-z0-9_>])"
_R: Final = r"(?![A-Za-z0-9_<])"

# A quoted value: no whitespace inside (prose in quotes, e.g. a JSON "message", is kept
# and normalized word by word), nor ``<``/``>`` (so a second pass cannot span a
# placeholder), the quotes not glued to a word (``can't``).
_QUOTED: Final = re.compile(r"""(?<![\w'"`>])(?:'[^'\s<>]+'|"[^"\s<>]+"|`[^`\s<>]+`)(?![\w'"`<])""")
_UUID: Final = re.compile(
    _L + r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}" + _R
)
# Provider request/object ids: a known prefix, ``_`` or ``-``, then at least 2 letters or
# digits including a digit (``req_abc123``, ``chatcmpl-9x…``, ``msg_01X…``, ``toolu_…``)...
_KNOWN_ID: Final = re.compile(
    _L + r"(?:req|request|chatcmpl|cmpl|msg|call|toolu|resp|run|thread|asst|file|batch|org"
    r"|sess|span|trace|gen|evt|job)[_-](?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{2,}" + _R
)
# ... or any ``word_`` / ``word-`` prefix followed by 10+ letters and digits mixing both
# (``sk-proj-…``, ``id-7f3kq9x0p2m4``). Pure digits (dates in model names) do not count.
_GENERIC_ID: Final = re.compile(
    _L + r"[A-Za-z]{2,16}[_-](?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{10,}" + _R
)
# 16+ hex digits with at least one letter (a pure digit run is a number), or 0x + 6+.
_HEX: Final = re.compile(_L + r"(?:0[xX][0-9a-fA-F]{6,}|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{16,})" + _R)
# A number that starts a token or follows punctuation (``429``, ``2.5s``, ``gpt-4o``), but
# not digits glued to a preceding letter or underscore (``v1``, ``user42`` stay).
_NUMBER: Final = re.compile(_L + r"[0-9]+(?:\.[0-9]+)?")
_DIGIT: Final = re.compile(r"[0-9]")


def normalize_message(message: str) -> str:
    """The message with variable parts replaced by placeholders, whitespace collapsed.

    Replaced, in order: quoted values without whitespace or ``<>`` (``'...'``, ``"..."``,
    ```...```) → ``<str>`` (quoted prose is kept and normalized word by word); UUIDs → ``<uuid>``; request/object ids → ``<id>``; long hex
    strings → ``<hex>``; numbers → ``<num>``. Idempotent:
    ``normalize_message(normalize_message(m)) == normalize_message(m)``.
    """
    # Word by word: no pattern matches whitespace, and whitespace passes every
    # boundary check the way the start or end of a string does, so each word is
    # normalized on its own; short words are remembered (most recur from message to
    # message, e.g. everything but the request id).
    get = _WORDS.get
    return " ".join([get(w) or _normalize_word(w) for w in message.split()])


_WORDS: dict[str, str] = {}
"""Short words and what they normalize to (a memo; cleared when full)."""
_WORDS_SIZE: Final = 4096
_WORD_CACHED_CHARS: Final = 64


def _normalize_word(word: str) -> str:
    # Each pass is skipped when the characters it needs are absent (a pass costs about a
    # microsecond even when it matches nothing); no placeholder adds such characters.
    m = word
    if "'" in m or '"' in m or "`" in m:
        m = _QUOTED.sub("<str>", m)
    if m.count("-") >= 4:
        m = _UUID.sub("<uuid>", m)
    digits = _DIGIT.search(m) is not None
    if digits and ("_" in m or "-" in m):  # both id patterns need a digit and a separator
        replaced = _KNOWN_ID.sub("<id>", m)
        if replaced != m:  # the id may have held the only digits (a word is often one id)
            m = replaced
            digits = _DIGIT.search(m) is not None
        if digits and ("_" in m or "-" in m):
            m = _GENERIC_ID.sub("<id>", m)
    if len(m) >= 8:  # "0x" and 6 hex digits, or 16 hex digits
        m = _HEX.sub("<hex>", m)
    if digits:
        m = _NUMBER.sub("<num>", m)
    if len(word) <= _WORD_CACHED_CHARS:
        if len(_WORDS) >= _WORDS_SIZE:
            _WORDS.clear()
        _WORDS[word] = m
    return m


def fingerprint(error_type: str, endpoint: str | None, message: str | None) -> str:
    """12 hex characters (48 bits of BLAKE2b) identifying an error pattern.

    Hashes ``error_type``, ``endpoint`` (``None`` as empty) and the *normalized* message,
    separated by a unit separator so that fields cannot run into each other. Stable across
    processes and versions as long as ``normalize_message`` is unchanged.
    """
    return _digest(error_type, endpoint, normalize_message(message) if message else "")


def _digest(error_type: str, endpoint: str | None, normalized: str) -> str:
    data = "\x1f".join((error_type, endpoint or "", normalized)).encode("utf-8", "replace")
    return hashlib.blake2b(data, digest_size=6).hexdigest()


# --- snapshots --------------------------------------------------------------------------


class ErrorPattern(msgspec.Struct, frozen=True, kw_only=True):
    """One error pattern: every error with the same fingerprint.

    ``models`` counts errors per affected model, for at most ``MAX_MODELS_PER_PATTERN``
    models; errors of further models are counted in ``other_models``. ``status_codes``
    likewise (``None`` status codes are not counted; ``other_status_codes`` for overflow).
    ``message`` is the normalized message; ``sample_message`` the first raw message seen,
    cut to ``MAX_SAMPLE_CHARS``.
    """

    fingerprint: str
    error_type: str
    endpoint: str | None
    message: str
    sample_message: str
    count: int
    first_seen_ms: int
    last_seen_ms: int
    models: dict[str, int]
    other_models: int = 0
    status_codes: dict[int, int]
    other_status_codes: int = 0


class ErrorPatternsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The error table at a glance: totals, evictions, and the top patterns by count.

    ``total_errors`` counts every observed error, including those of evicted patterns.
    """

    total_errors: int
    distinct_patterns: int
    evicted: int
    patterns: list[ErrorPattern]


# --- the table --------------------------------------------------------------------------


class _Pattern:
    __slots__ = (
        "count",
        "endpoint",
        "error_type",
        "fingerprint",
        "first_seen_ms",
        "last_seen_ms",
        "message",
        "models",
        "other_models",
        "other_status_codes",
        "sample_message",
        "status_codes",
    )

    def __init__(
        self,
        fp: str,
        error_type: str,
        endpoint: str | None,
        normalized: str,
        sample: str,
        now_ms: int,
    ) -> None:
        self.fingerprint = fp
        self.error_type = error_type
        self.endpoint = endpoint
        self.message = normalized
        self.sample_message = sample
        self.count = 0
        self.first_seen_ms = now_ms
        self.last_seen_ms = now_ms
        self.models: dict[str, int] = {}
        self.other_models = 0
        self.status_codes: dict[int, int] = {}
        self.other_status_codes = 0

    def freeze(self) -> ErrorPattern:
        return ErrorPattern(
            fingerprint=self.fingerprint,
            error_type=self.error_type,
            endpoint=self.endpoint,
            message=self.message,
            sample_message=self.sample_message,
            count=self.count,
            first_seen_ms=self.first_seen_ms,
            last_seen_ms=self.last_seen_ms,
            models=dict(self.models),
            other_models=self.other_models,
            status_codes=dict(self.status_codes),
            other_status_codes=self.other_status_codes,
        )


class ErrorPatterns:
    """Error counts per fingerprint, at most ``max_patterns`` of them.

    When full, a new fingerprint evicts the pattern observed least recently (LRU; with
    non-decreasing ``now_ms`` that is the smallest ``last_seen_ms``) and ``evicted`` is
    incremented. Memory per pattern is bounded too (see ``ErrorPattern``). Not thread-safe:
    owned by one actor.
    """

    __slots__ = (
        "_cache",
        "_digests",
        "_patterns",
        "evicted",
        "max_models",
        "max_patterns",
        "total_errors",
    )

    def __init__(self, max_patterns: int = 1000, *, max_models: int = MAX_MODELS_PER_PATTERN):
        if max_patterns < 1:
            raise ValueError("max_patterns must be at least 1")
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_patterns = max_patterns
        self.max_models = max_models
        self.evicted = 0
        self.total_errors = 0
        # Insertion order is recency order: observe() moves a pattern to the end.
        self._patterns: OrderedDict[str, _Pattern] = OrderedDict()
        # Raw (type, endpoint, message) → (fingerprint, normalized), least recent first:
        # an error repeated word for word skips the regexes and the hash.
        self._cache: OrderedDict[tuple[str, str | None, str], tuple[str, str]] = OrderedDict()
        # (type, endpoint, normalized message) → fingerprint: messages that differ only
        # in their ids (a request id in each) skip the hash. Cleared when full.
        self._digests: dict[tuple[str, str | None, str], str] = {}

    def __len__(self) -> int:
        return len(self._patterns)

    def observe(
        self,
        now_ms: int,
        error_type: str,
        message: str | None,
        *,
        model: str | None,
        status_code: int | None,
        endpoint: str | None = None,
    ) -> str:
        """Count one error at ``now_ms``; returns its fingerprint.

        Only the first ``MAX_NORMALIZED_INPUT`` characters of ``message`` are normalized.
        ``last_seen_ms`` never moves backwards if ``now_ms`` does.
        """
        raw = (message or "")[:MAX_NORMALIZED_INPUT]
        key = (error_type, endpoint, raw)
        cache = self._cache
        hit = cache.get(key)
        if hit is None:
            normalized = normalize_message(raw)
            digests = self._digests
            fp_key = (error_type, endpoint, normalized)
            known = digests.get(fp_key)
            if known is None:
                known = _digest(error_type, endpoint, normalized)
                if len(digests) >= MESSAGE_CACHE_SIZE:
                    digests.clear()
                digests[fp_key] = known
            fp = known
            if len(cache) >= MESSAGE_CACHE_SIZE:
                cache.popitem(last=False)
            cache[key] = (fp, normalized)
        else:
            cache.move_to_end(key)
            fp, normalized = hit
        self.total_errors += 1
        patterns = self._patterns
        p = patterns.get(fp)
        if p is None:
            if len(patterns) >= self.max_patterns:
                patterns.popitem(last=False)
                self.evicted += 1
            p = patterns[fp] = _Pattern(
                fp, error_type, endpoint, normalized, raw[:MAX_SAMPLE_CHARS], now_ms
            )
        else:
            patterns.move_to_end(fp)
            if now_ms > p.last_seen_ms:
                p.last_seen_ms = now_ms
            if now_ms < p.first_seen_ms:
                p.first_seen_ms = now_ms
        p.count += 1
        if model is not None:
            models = p.models
            if model in models:
                models[model] += 1
            elif len(models) < self.max_models:
                models[model] = 1
            else:
                p.other_models += 1
        if status_code is not None:
            codes = p.status_codes
            if status_code in codes:
                codes[status_code] += 1
            elif len(codes) < MAX_STATUS_CODES_PER_PATTERN:
                codes[status_code] = 1
            else:
                p.other_status_codes += 1
        return fp

    def get(self, fp: str) -> ErrorPattern | None:
        """The pattern with fingerprint ``fp``, or ``None`` (never seen, or evicted)."""
        p = self._patterns.get(fp)
        return None if p is None else p.freeze()

    def top(self, n: int = 20) -> list[ErrorPattern]:
        """The ``n`` most frequent patterns: count descending, then most recent first,
        then fingerprint (so ties are ordered deterministically)."""
        if n <= 0:
            return []
        best = heapq.nsmallest(
            n,
            self._patterns.values(),
            key=lambda p: (-p.count, -p.last_seen_ms, p.fingerprint),
        )
        return [p.freeze() for p in best]

    def snapshot(self, n: int = 20) -> ErrorPatternsSnapshot:
        """Totals plus ``top(n)``."""
        return ErrorPatternsSnapshot(
            total_errors=self.total_errors,
            distinct_patterns=len(self._patterns),
            evicted=self.evicted,
            patterns=self.top(n),
        )

    def clear(self) -> None:
        """Forget every pattern and reset the counters."""
        self._patterns.clear()
        self.evicted = 0
        self.total_errors = 0
