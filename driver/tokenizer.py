"""llama2.c's tokenizer: the tokenizer.bin format, its BPE encode and its piece decode.

tokenizer.bin holds a uint32 max_token_length, then per piece a float32 merge score, an int32
length and the piece's bytes. The piece count is not stored: it runs to the end of the file
and must equal the model's vocab_size. Ids 0, 1, 2 are <unk>, BOS and EOS; ids 3..258 stand
for the raw bytes 0x00..0xFF (byte fallback), written as "<0xNN>" pieces.
"""

import codecs
import heapq
import re
import struct

import numpy as np

BOS, EOS = 1, 2
BYTE_OFFSET = 3                       # id of the byte-fallback piece for byte 0x00
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_NO_MERGE = float(np.float32(-1e10))  # llama2.c's starting best score: pairs at or below never merge


class TokenizerFormatError(ValueError):
    """The file is not a llama2.c tokenizer.bin, is damaged, or does not fit the model."""


class Tokenizer:
    """A llama2.c vocabulary: ``pieces[id]`` (bytes) and the merge ``scores[id]`` (float32)."""

    def __init__(self, pieces, scores, max_token_length=None):
        if len(pieces) != len(scores):
            raise ValueError(f"Tokenizer: {len(pieces)} pieces but {len(scores)} scores")
        self.pieces = [p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in pieces]
        if b"" in self.pieces:
            raise ValueError(f"Tokenizer: piece {self.pieces.index(b'')} is empty")
        self.scores = [float(np.float32(s)) for s in scores]
        self.max_token_length = max_token_length or max((len(p) for p in self.pieces), default=0)
        self._longest = max((len(p) for p in self.pieces), default=1) or 1
        # A piece listed twice resolves to its first id (llama2.c's bsearch picks either one).
        self._ids = {}
        for i, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, i)

    @property
    def vocab_size(self):
        return len(self.pieces)

    # File ----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path, vocab_size=None):
        """Read a tokenizer.bin; with ``vocab_size``, its piece count must match the model's."""
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as e:
            raise TokenizerFormatError(f"cannot read tokenizer {path}: {e}") from None
        if len(blob) < 4:
            raise TokenizerFormatError(f"{path}: {len(blob)} bytes is shorter than the 4-byte "
                                       f"tokenizer header")
        max_len = struct.unpack_from("<I", blob)[0]
        pieces, scores, offset = [], [], 4
        while offset < len(blob):
            where = f"{path}: piece {len(pieces)} at byte {offset}"
            if offset + 8 > len(blob):
                raise TokenizerFormatError(f"{where}: truncated: {len(blob) - offset} bytes left, "
                                           f"a piece header needs 8")
            score, length = struct.unpack_from("<fi", blob, offset)
            if not 0 <= length <= max_len:
                raise TokenizerFormatError(f"{where}: length {length} outside 0..{max_len} (the header's "
                                           f"max_token_length): not a tokenizer.bin, or damaged")
            if length == 0:
                # Joined to a neighbour, an empty piece gives the neighbour back: the merges
                # would never end. No sentencepiece vocabulary has one.
                raise TokenizerFormatError(f"{where}: an empty piece (length 0): not a tokenizer.bin, "
                                           f"or damaged")
            if not np.isfinite(score):
                raise TokenizerFormatError(f"{where}: score is {score}")
            offset += 8
            if offset + length > len(blob):
                raise TokenizerFormatError(f"{where}: truncated: the piece promises {length} bytes, "
                                           f"{len(blob) - offset} are left")
            pieces.append(blob[offset:offset + length])
            scores.append(score)
            offset += length
        if len(pieces) <= EOS:
            raise TokenizerFormatError(f"{path}: {len(pieces)} pieces; a llama2.c vocabulary starts with "
                                       f"<unk>, BOS and EOS")
        if vocab_size is not None and len(pieces) != vocab_size:
            raise TokenizerFormatError(f"{path}: {len(pieces)} pieces, the model's vocab_size "
                                       f"is {vocab_size}")
        return cls(pieces, scores, max_len)

    def save(self, path):
        with open(path, "wb") as f:
            f.write(struct.pack("<I", self.max_token_length))
            for piece, score in zip(self.pieces, self.scores):
                f.write(struct.pack("<fi", score, len(piece)) + piece)

    # Encode --------------------------------------------------------------------------------------------
    def encode(self, text, bos=True, eos=False):
        """Token ids of ``text`` (str or UTF-8 bytes), as llama2.c's run.c encode."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        # A non-empty text gets sentencepiece's dummy prefix: a " " token before the first
        # character, which the merges below may then join to it.
        tokens = [BOS] if bos else []
        if data:
            tokens += self._symbols(b" " + data)
        self._merge(tokens)
        return tokens + [EOS] if eos else tokens

    def min_tokens(self, text, bos=True):
        """A lower bound on ``len(encode(text, bos))`` that costs nothing: no piece covers more
        bytes than the longest one. A prompt that cannot fit the context is refused by this
        before the merges (quadratic in the prompt's length) run."""
        n = len(text.encode("utf-8") if isinstance(text, str) else text)
        return int(bos) + (-(-(n + 1) // self._longest) if n else 0)

    def _symbols(self, data):
        """One id per character, or one byte-fallback id per byte of a character not in the vocabulary."""
        ids = []
        for char in _characters(data):
            if char in self._ids:
                ids.append(self._ids[char])
                continue
            for b in char:
                if b + BYTE_OFFSET >= self.vocab_size:
                    raise ValueError(f"encode: {char!r} is not in the vocabulary and byte fallback needs "
                                     f"id {b + BYTE_OFFSET}, beyond its {self.vocab_size} pieces")
                ids.append(b + BYTE_OFFSET)
        return ids

    def _merge(self, tokens):
        """Join, again and again, the adjacent pair whose concatenation is the best-scoring piece;
        the leftmost such pair wins ties (llama2.c compares with a strict >). llama2.c rescans
        every pair after each merge (time quadratic in the text's length); a heap of candidate
        pairs, keyed by score and then position, picks the same pair each time in log time.
        Entries made stale by a merge next to them are skipped when they surface."""
        n = len(tokens)
        nxt = list(range(1, n)) + [-1]
        prev = list(range(-1, n - 1))
        heap = []

        def candidate(i):
            j = nxt[i]
            if j < 0:
                return
            merged = self._ids.get(self.pieces[tokens[i]] + self.pieces[tokens[j]])
            if merged is not None and self.scores[merged] > _NO_MERGE:
                heapq.heappush(heap, (-self.scores[merged], i, tokens[i], tokens[j], merged))

        for i in range(n - 1):
            candidate(i)
        while heap:
            _, i, left, right, merged = heapq.heappop(heap)
            j = nxt[i]
            # Stale: i was absorbed (its token is gone), or i or its right neighbour changed.
            if tokens[i] != left or j < 0 or tokens[j] != right:
                continue
            tokens[i] = merged
            tokens[j] = None                    # absorbed
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prev[nxt[j]] = i
            if prev[i] >= 0:
                candidate(prev[i])
            candidate(i)
        tokens[:] = [t for t in tokens if t is not None]

    # Decode --------------------------------------------------------------------------------------------
    def decode(self, prev_token, token):
        """The bytes ``token`` prints as after ``prev_token``, as llama2.c's decode: after BOS one
        leading space goes (sentencepiece drops its dummy prefix); "<0xNN>" is the raw byte."""
        piece = self.pieces[token]
        if prev_token == BOS and piece.startswith(b" "):
            piece = piece[1:]
        byte = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(byte.group(1), 16)]) if byte else piece

    def decode_all(self, tokens, prev=None):
        """The text of ``tokens`` (``prev``: the token before the first). BOS and EOS mark
        sequence bounds and print nothing; invalid UTF-8 becomes U+FFFD."""
        out = []
        for token in tokens:
            if token not in (BOS, EOS):
                out.append(self.decode(prev, token))
            prev = token
        return b"".join(out).decode("utf-8", errors="replace")


def _characters(data):
    """Split bytes as llama2.c does: a byte plus the continuation bytes (10xxxxxx) after it, at
    most 4 bytes; a stray continuation byte becomes a character of its own."""
    char = bytearray()
    for i, b in enumerate(data):
        char.append(b)
        nxt = data[i + 1] if i + 1 < len(data) else 0
        if nxt & 0xC0 == 0x80 and len(char) < 4:
            continue
        yield bytes(char)
        char = bytearray()


class StreamDecoder:
    """Text of tokens that arrive one at a time: ``feed(token)`` returns what is complete, holding
    back the first bytes of a UTF-8 character split across tokens (byte-fallback pieces)."""

    def __init__(self, tokenizer, prev=None):
        self.tokenizer, self.prev = tokenizer, prev
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token):
        piece = b"" if token in (BOS, EOS) else self.tokenizer.decode(self.prev, token)
        self.prev = token
        return self._utf8.decode(piece)

    def flush(self):
        """What is held back at the end of the stream (U+FFFD for an incomplete character)."""
        return self._utf8.decode(b"", final=True)
