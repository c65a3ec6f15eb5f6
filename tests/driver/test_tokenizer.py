"""llama2.c's tokenizer: tokenizer.bin, BPE encode and piece decode, on a hand-built vocabulary
whose expected ids are worked out by hand below, and on the shared model's real tokenizer."""

import random
import struct
import time

import pytest
from hypothesis import given, strategies as st

from driver.tokenizer import BOS, EOS, StreamDecoder, Tokenizer, TokenizerFormatError
from tests.shared import shared_path


# <unk>, BOS, EOS, the 256 byte pieces (id = byte + 3), then ours from id 259.
SPECIAL = [(b"<unk>", 0.0), (b"\n<s>\n", 0.0), (b"\n</s>\n", 0.0)]
BYTES = [(b"<0x%02X>" % b, 0.0) for b in range(256)]
OURS = [(b" ", 0.0), (b"a", 0.0), (b"b", 0.0), (b"c", 0.0),           # 259..262
        (b"ab", -1.0), (b"bc", -1.0),                                   # 263, 264: a tie
        (b" ab", -2.0), (b"ca", 3.0), ("é".encode(), 0.0)]              # 265, 266, 267
SPACE, A, B, C, AB, BC, SPACE_AB, CA, E_ACUTE = range(259, 268)


def byte_id(b):
    return b + 3


@pytest.fixture
def tok():
    pieces, scores = zip(*(SPECIAL + BYTES + OURS))
    return Tokenizer(list(pieces), list(scores))


def test_bos_eos_and_empty_text(tok):
    # No dummy prefix for empty text; BOS/EOS only when asked.
    assert tok.encode("") == [BOS]
    assert tok.encode("", bos=False) == []
    assert tok.encode("", eos=True) == [BOS, EOS]
    assert tok.encode("a", bos=False, eos=True) == [SPACE, A, EOS]


def test_dummy_prefix_and_merge_order(tok):
    # " a b c": "ab" and "bc" tie at -1, the first pair wins; then " " + "ab" -> " ab".
    # (Merging "bc" first would have left " ", "a", "bc" with nothing more to merge.)
    assert tok.encode("abc") == [BOS, SPACE_AB, C]


def test_higher_score_wins_over_position(tok):
    # " b c a": "bc" (-1) comes first, but "ca" (3) scores higher; then nothing merges.
    assert tok.encode("bca", bos=False) == [SPACE, B, CA]


def test_byte_fallback(tok):
    # Characters outside the vocabulary become one id per UTF-8 byte; "é" is a piece.
    assert tok.encode("az", bos=False) == [SPACE, A, byte_id(0x7A)]
    assert tok.encode("€", bos=False) == [SPACE] + [byte_id(b) for b in (0xE2, 0x82, 0xAC)]
    assert tok.encode("😀", bos=False) == [SPACE] + [byte_id(b) for b in (0xF0, 0x9F, 0x98, 0x80)]
    assert tok.encode("é", bos=False) == [SPACE, E_ACUTE]
    assert tok.encode("é".encode(), bos=False) == [SPACE, E_ACUTE]      # bytes in, same ids


def test_decode(tok):
    # One leading space goes after BOS only; "<0xNN>" pieces are raw bytes, and a byte piece
    # for a space keeps it (the piece itself does not start with a space).
    assert tok.decode(BOS, SPACE_AB) == b"ab"
    assert tok.decode(A, SPACE_AB) == b" ab"
    assert tok.decode(BOS, SPACE) == b""
    assert tok.decode(A, byte_id(0x41)) == b"A"
    assert tok.decode(BOS, byte_id(0x20)) == b" "
    assert tok.decode(A, byte_id(0xE2)) == b"\xe2"


def test_decode_all_round_trip(tok):
    for text in ("abc", "bca", "a€z", "é c 😀"):
        assert tok.decode_all(tok.encode(text, eos=True)) == text
    assert tok.decode_all([A, byte_id(0xE2)]) == "a\ufffd"        # a cut-off character
    assert tok.decode_all([SPACE_AB], prev=BOS) == "ab"


def test_stream_decoder_holds_back_a_split_character(tok):
    # "€" arrives as three byte tokens: nothing is printed until the character is whole.
    tokens = [BOS, SPACE, A] + [byte_id(b) for b in (0xE2, 0x82, 0xAC)] + [byte_id(0x7A)]
    dec = StreamDecoder(tok)
    assert [dec.feed(t) for t in tokens] == ["", "", "a", "", "", "€", "z"]
    assert dec.flush() == ""
    dec = StreamDecoder(tok, prev=A)
    assert dec.feed(byte_id(0xE2)) == "" and dec.flush() == "\ufffd"


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "t.bin")
    back = Tokenizer.load(tmp_path / "t.bin", vocab_size=tok.vocab_size)
    assert back.pieces == tok.pieces and back.scores == tok.scores
    assert back.max_token_length == 6                             # "\n</s>\n" and "<0xNN>"


def _file(max_len, *pieces):
    return struct.pack("<I", max_len) + b"".join(struct.pack("<fi", s, len(p)) + p for s, p in pieces)


GOOD = [(0.0, b"<unk>"), (0.0, b"<s>"), (0.0, b"</s>"), (-1.0, b"ab")]


@pytest.mark.parametrize("blob,vocab,match", [
    (b"\x05\0", None, "shorter than the 4-byte"),
    (_file(5, *GOOD)[:-1], None, "piece 3 at byte .*truncated: the piece promises 2 bytes, 1 are left"),
    (_file(5, *GOOD) + b"\0\0\0", None, "piece 4 .*truncated: 3 bytes left"),
    (_file(5, *GOOD[:3], (0.0, b"toolong")), None, "length 7 outside 0..5"),
    (_file(5, *GOOD)[:-10] + struct.pack("<fi", 0.0, -1), None, "length -1 outside"),
    (_file(5, *GOOD[:3], (float("nan"), b"x")), None, "score is nan"),
    (_file(5, *GOOD[:3], (0.0, b"")), None, "piece 3 .*an empty piece"),
    (_file(5, *GOOD[:2]), None, "2 pieces"),
    (_file(5, *GOOD), 512, "4 pieces, the model's vocab_size is 512"),
])
def test_bad_files(tmp_path, blob, vocab, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(blob)
    with pytest.raises(TokenizerFormatError, match=match) as e:
        Tokenizer.load(path, vocab_size=vocab)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(TokenizerFormatError, match="cannot read tokenizer"):
        Tokenizer.load(tmp_path / "none.bin")


def _real():
    return Tokenizer.load(shared_path("aidreams260K", "tok512.bin"), vocab_size=512)


@pytest.mark.parametrize("text", [
    "Echoes of vectors unfold, a gentle hum of precision.",
    "Once upon a time, there was a little robot who dreamed of electric sheep.",
    "It said: \"Hello, world!\" -- and then (quietly) 42 times more; café, naïve, 日本.",
])
def test_real_tokenizer_round_trip(text):
    tok = _real()
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert all(0 <= i < 512 for i in ids)
    assert len(ids) < len(text.encode())                          # merges happened
    assert tok.decode_all(ids) == text


def test_real_tokenizer_single_merge():
    # " " + "a" is a piece of tok512, so "a" is one token after BOS.
    tok = _real()
    assert tok.encode("a") == [BOS, tok.pieces.index(b" a")]


def _llama2c_merge(tok, tokens):
    """llama2.c run.c's merge loop as written there: rescan every adjacent pair, merge the best
    (strictly greater score, so the leftmost of a tie), until no pair is a piece."""
    tokens = list(tokens)
    while True:
        best_score, best = -1e10, None
        for i in range(len(tokens) - 1):
            joined = tok.pieces[tokens[i]] + tok.pieces[tokens[i + 1]]
            if joined in tok.pieces:
                merged = tok.pieces.index(joined)
                if tok.scores[merged] > best_score:
                    best_score, best = tok.scores[merged], (i, merged)
        if best is None:
            return tokens
        i, merged = best
        tokens[i:i + 2] = [merged]


def _check_against_llama2c(tok, text):
    symbols = tok._symbols(b" " + text.encode()) if text else []
    assert tok.encode(text, bos=False) == _llama2c_merge(tok, symbols)


@given(st.text(alphabet="abc é€", max_size=40))
def test_merges_equal_llama2c_on_ties(text):
    # The hand-built vocabulary has a tie ("ab", "bc") and a later higher score ("ca").
    pieces, scores = zip(*(SPECIAL + BYTES + OURS))
    _check_against_llama2c(Tokenizer(list(pieces), list(scores)), text)


@given(st.integers(0, 2 ** 32 - 1), st.text(alphabet="abcd", max_size=30))
def test_merges_equal_llama2c_on_random_vocabularies(seed, text):
    # Random merge pieces over a 4-letter alphabet, scores drawn from 3 values: many ties.
    rng = random.Random(seed)
    words = {"".join(rng.choice("abcd ") for _ in range(rng.randint(2, 4))) for _ in range(30)}
    ours = [(c.encode(), 0.0) for c in " abcd"] + [(w.encode(), float(rng.choice((-1, 0, 2)))) for w in sorted(words)]
    pieces, scores = zip(*(SPECIAL + BYTES + ours))
    _check_against_llama2c(Tokenizer(list(pieces), list(scores)), text)


@given(st.text(max_size=80))
def test_merges_equal_llama2c_on_the_real_tokenizer(text):
    _check_against_llama2c(_real(), text)


def test_a_long_prompt_encodes_in_bounded_time():
    # A vocabulary whose longest piece is long makes the cheap length bound (min_tokens) useless:
    # a 25,000-character prompt reaches the merges. llama2.c's rescanning took 102 s here.
    pieces, scores = zip(*(SPECIAL + BYTES + OURS + [(b"x" * 4000, -5.0)]))
    tok = Tokenizer(list(pieces), list(scores))
    text = "abc bca cab " * 2100
    assert tok.min_tokens(text) < 10
    t0 = time.monotonic()
    ids = tok.encode(text)
    assert time.monotonic() - t0 < 10.0
    assert tok.decode_all(ids) == text
