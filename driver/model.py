"""llama2.c checkpoints: config and weights, with every malformed file named as such.

Three formats, told apart by their first bytes (``load``):

- legacy (version 0): a 28-byte header of 7 int32, then fp32 tensors in ``_layout`` order. A
  negative vocab_size means an unshared classifier (``wcls`` follows the RoPE tables).
- version 1: magic "ak42", int32 version, the same 7 int32, a uint8 shared-classifier flag,
  zeros up to 256 bytes; then fp32 tensors, norms first (``_versioned_layout``).
- version 2 (Q8_0): version 1's header plus an int32 group_size after the flag; fp32 norms,
  then each weight matrix as int8 values followed by its fp32 per-group scales. Loading
  dequantises (q * scale) into the same float32 ``Model``.
"""

import math
import os
import struct
from dataclasses import dataclass

import numpy as np


MAX_CONTEXT = 1 << 20      # positions: Llama-family contexts stay far below; a damaged header does not


class ModelFormatError(ValueError):
    """The file is not a llama2.c checkpoint this loader can read, or is damaged."""


@dataclass(frozen=True)
class Config:
    dim: int            # transformer width
    hidden_dim: int     # FFN width
    n_layers: int
    n_heads: int
    n_kv_heads: int     # < n_heads: grouped-query attention
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_size(self):
        return self.dim // self.n_heads

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_size

    def validate(self):
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ModelFormatError(f"field {name} = {getattr(self, name)} must be positive")
        if self.dim % self.n_heads:
            raise ModelFormatError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ModelFormatError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_size % 2:
            raise ModelFormatError(f"head size {self.head_size} is odd: RoPE rotates pairs")
        if self.seq_len > MAX_CONTEXT:
            raise ModelFormatError(f"field seq_len = {self.seq_len} is beyond the {MAX_CONTEXT:,} positions "
                                   f"this loader accepts (the header sizes caches and tables the file does not hold)")


@dataclass
class Model:
    config: Config
    weights: dict       # name -> float32 array, names and shapes as in _layout

    def layer(self, name, l):
        return self.weights[name][l]


def _layout(c):
    """Tensor names and shapes in legacy file order. Matrices are (out, in): y = W @ x."""
    L, d, h, kv = c.n_layers, c.dim, c.hidden_dim, c.kv_dim
    hs = c.head_size
    layout = [
        ("token_embedding", (c.vocab_size, d)),
        ("rms_att", (L, d)),
        ("wq", (L, d, d)),
        ("wk", (L, kv, d)),
        ("wv", (L, kv, d)),
        ("wo", (L, d, d)),
        ("rms_ffn", (L, d)),
        ("w1", (L, h, d)),
        ("w2", (L, d, h)),
        ("w3", (L, h, d)),
        ("rms_final", (d,)),
        ("freq_cis_real", (c.seq_len, hs // 2)),   # unused: RoPE is recomputed
        ("freq_cis_imag", (c.seq_len, hs // 2)),
    ]
    if not c.shared_classifier:
        layout.append(("wcls", (c.vocab_size, d)))
    return layout


NORMS = ("rms_att", "rms_ffn", "rms_final")                 # fp32 in every version
MATRICES = ("token_embedding", "wq", "wk", "wv", "wo", "w1", "w2", "w3")


def _versioned_layout(c):
    """Tensor names and shapes in version 1/2 order: norms, matrices, then wcls if unshared.
    The RoPE tables are not stored."""
    shapes = dict(_layout(c))
    names = NORMS + MATRICES + (() if c.shared_classifier else ("wcls",))
    return [(name, shapes[name]) for name in names]


def _rope_tables(c):
    """The cos/sin tables legacy files carry (llama2.c's freqs_cos/freqs_sin), so a model read
    from version 1/2 saves as the legacy file llama2.c itself would write. Built only then: their
    size follows the header's seq_len, not the file's, so a small file could ask for gigabytes."""
    hs = c.head_size
    freqs = 1.0 / 10000.0 ** (np.arange(0, hs, 2, dtype=np.float32) / np.float32(hs))
    angles = np.outer(np.arange(c.seq_len, dtype=np.float32), freqs).astype(np.float32)
    return np.cos(angles), np.sin(angles)


# Headers ---------------------------------------------------------------------------------------------

LEGACY_HEADER = struct.Struct("<7i")
MAGIC = 0x616B3432                                      # "ak42" read as a big-endian word...
MAGIC_BYTES = struct.pack("<I", MAGIC)                  # ...so the file starts with b"24ka"
V1_HEADER = struct.Struct("<Ii7iB")                     # magic, version, 7 params, shared flag
V2_HEADER = struct.Struct("<Ii7iBi")                    # ..., group_size (unaligned, offset 37)
HEADER_SIZE = 256                                       # versions 1 and 2, zero-padded


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ModelFormatError(f"cannot read model {path}: {e}") from None


def _config(fields, shared, path, what):
    config = Config(*fields, shared_classifier=shared)
    try:
        config.validate()
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {what}: {e}") from None
    return config


def _check_size(blob, need, path, what):
    if len(blob) < need:
        raise ModelFormatError(f"{path}: truncated: the {what} header promises {need} bytes, "
                               f"the file has {len(blob)}")
    if len(blob) > need:
        raise ModelFormatError(f"{path}: {len(blob) - need} trailing bytes after the {need} bytes "
                               f"the {what} header describes")


class _Cursor:
    """Consecutive little-endian arrays out of a checkpoint whose size is already checked."""

    def __init__(self, blob, offset):
        self.blob, self.offset = blob, offset

    def take(self, dtype, shape):
        count = math.prod(shape)
        a = np.frombuffer(self.blob, dtype=dtype, count=count, offset=self.offset).reshape(shape)
        self.offset += a.nbytes
        return a


# Q8_0 ------------------------------------------------------------------------------------------------

def _matrices(shape):
    """How a tensor is stored in version 2: (number of matrices, values per matrix). Layer
    stacks are quantised layer by layer, each matrix followed by its own scales."""
    return math.prod(shape[:-2]), shape[-2] * shape[-1]


def _quantize_q80(w, group_size):
    """llama2.c's Q8_0 rule: per group, scale = max|w| / 127 and q = round(w / scale) (half to
    even, as torch.round). An all-zero group gets scale 0 and q 0 rather than 0/0."""
    g = np.asarray(w, np.float32).reshape(-1, group_size)
    scale = np.abs(g).max(axis=1) / np.float32(127.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scale[:, None] > 0, np.round(g / scale[:, None]), 0)
    return q.astype(np.int8), scale.astype(np.float32)


def _dequantize_q80(q, scale):
    """float32 q * scale per group, as llama2.c's runq dequantize."""
    return q.reshape(len(scale), -1).astype(np.float32) * scale[:, None]


def _q80_bytes(shape, group_size):
    n, size = _matrices(shape)
    return n * (size + 4 * (size // group_size))


# Loading ---------------------------------------------------------------------------------------------

def load(path):
    """Read a llama2.c checkpoint of any version (legacy fp32, v1 fp32, v2 Q8_0) into a float32
    ``Model``. Raises ModelFormatError, naming the file and the problem, on anything malformed."""
    blob = _read(path)
    if blob[:4] == MAGIC_BYTES:
        return _parse_versioned(blob, path)
    if len(blob) >= 4 and all(0x20 <= b < 0x7F for b in blob[:4]):
        # Four printable bytes would be a legacy dim above 500 million: a damaged magic.
        raise ModelFormatError(f"{path}: bad magic {blob[:4]!r}: llama2.c version 1/2 checkpoints start "
                               f"with {MAGIC_BYTES!r} (0x{MAGIC:08x}), legacy ones with a small dim")
    return _parse_legacy(blob, path)


def load_legacy(path):
    """Read a legacy llama2.c fp32 checkpoint (``load`` reads every version)."""
    return _parse_legacy(_read(path), path)


def _parse_legacy(blob, path):
    if len(blob) < LEGACY_HEADER.size:
        raise ModelFormatError(f"{path}: {len(blob)} bytes is shorter than the 28-byte llama2.c header")
    if blob[:4] == MAGIC_BYTES:
        raise ModelFormatError(f"{path}: a version 1/2 ('ak42') checkpoint, not a legacy one: use load()")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = LEGACY_HEADER.unpack_from(blob)
    config = _config((dim, hidden, n_layers, n_heads, n_kv_heads, abs(vocab), seq_len), vocab > 0,
                     path, "legacy header")
    layout = _layout(config)
    _check_size(blob, LEGACY_HEADER.size + 4 * sum(math.prod(s) for _, s in layout), path, "legacy")
    cursor = _Cursor(blob, LEGACY_HEADER.size)
    weights = {name: cursor.take("<f4", shape) for name, shape in layout}
    return _finish(config, weights, path)


def _parse_versioned(blob, path):
    if len(blob) < HEADER_SIZE:
        raise ModelFormatError(f"{path}: {len(blob)} bytes is shorter than the 256-byte 'ak42' header")
    version = struct.unpack_from("<i", blob, 4)[0]
    if version not in (1, 2):
        raise ModelFormatError(f"{path}: unknown 'ak42' checkpoint version {version} "
                               f"(this loader reads 1 and 2)")
    _, _, *fields, shared = V1_HEADER.unpack_from(blob)
    if shared not in (0, 1):
        raise ModelFormatError(f"{path}: version {version} header: shared_classifier flag is {shared}, "
                               f"must be 0 or 1")
    config = _config(fields, bool(shared), path, f"version {version} header")
    layout = _versioned_layout(config)
    cursor = _Cursor(blob, HEADER_SIZE)
    if version == 1:
        _check_size(blob, HEADER_SIZE + 4 * sum(math.prod(s) for _, s in layout), path, "version 1")
        weights = {name: cursor.take("<f4", shape) for name, shape in layout}
    else:
        group_size = V2_HEADER.unpack_from(blob)[-1]
        problem = _group_size_problem(group_size, layout)
        if problem:
            raise ModelFormatError(f"{path}: version 2 header: {problem}")
        need = HEADER_SIZE + sum(4 * math.prod(s) if name in NORMS else _q80_bytes(s, group_size)
                                 for name, s in layout)
        _check_size(blob, need, path, "version 2")
        weights = {}
        for name, shape in layout:
            if name in NORMS:
                weights[name] = cursor.take("<f4", shape)
                continue
            n, size = _matrices(shape)
            mats = [_dequantize_q80(cursor.take("i1", (size,)), cursor.take("<f4", (size // group_size,)))
                    for _ in range(n)]
            weights[name] = np.stack(mats).reshape(shape)
    return _finish(config, weights, path)


def _group_size_problem(group_size, layout):
    """Why ``group_size`` cannot quantise the matrices of ``layout``, or None."""
    if group_size <= 0:
        return f"group_size = {group_size} must be positive"
    for name, shape in layout:
        if name not in NORMS and _matrices(shape)[1] % group_size:
            return (f"group_size {group_size} does not divide tensor {name} "
                    f"({shape[-2]} x {shape[-1]} values per matrix)")
    return None


def _finish(config, weights, path):
    if config.shared_classifier:
        weights["wcls"] = weights["token_embedding"]
    for name, w in weights.items():
        if not np.all(np.isfinite(w)):
            raise ModelFormatError(f"{path}: tensor {name} holds NaN or infinity")
    return Model(config, weights)


# Saving ----------------------------------------------------------------------------------------------

def save(model, path, version=0, group_size=None):
    """Write ``model`` as a llama2.c checkpoint: version 0 (legacy fp32), 1 (fp32) or 2 (Q8_0).
    Version 2's ``group_size`` defaults to llama2.c's: 64, halved until it divides dim."""
    if version not in (0, 1, 2):
        raise ValueError(f"save: unknown checkpoint version {version} (0, 1 or 2)")
    if group_size is not None and version != 2:
        raise ValueError("save: group_size applies to version 2 only")
    if version == 0:
        return save_legacy(model, path)
    c = model.config
    layout = _versioned_layout(c)
    tensors = _tensors(model, layout)
    if version == 1:
        header = V1_HEADER.pack(MAGIC, 1, *_fields(c), int(c.shared_classifier))
        chunks = [t.tobytes() for t in tensors]
    else:
        if group_size is None:
            group_size = 64
            while c.dim % group_size:
                group_size //= 2
        problem = _group_size_problem(group_size, layout)
        if problem:
            raise ValueError(f"save: {problem}")
        header = V2_HEADER.pack(MAGIC, 2, *_fields(c), int(c.shared_classifier), group_size)
        chunks = []
        for (name, shape), t in zip(layout, tensors):
            if name in NORMS:
                chunks.append(t.tobytes())
                continue
            for matrix in t.reshape(_matrices(shape)):
                q, scale = _quantize_q80(matrix, group_size)
                chunks += [q.tobytes(), scale.astype("<f4").tobytes()]
    _write(path, [header.ljust(HEADER_SIZE, b"\0")] + chunks)


def save_legacy(model, path):
    """Write ``model`` as a legacy llama2.c fp32 checkpoint (negative vocab_size when the
    classifier is not shared)."""
    c = model.config
    vocab = c.vocab_size if c.shared_classifier else -c.vocab_size
    header = LEGACY_HEADER.pack(c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.seq_len)
    tensors = _tensors(model, _layout(c))
    _write(path, [header] + [t.tobytes() for t in tensors])


def _fields(c):
    return [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len]


def _tensors(model, layout):
    """The model's tensors for ``layout`` as little-endian fp32, shapes checked before any write."""
    out = []
    tables = dict(zip(("freq_cis_real", "freq_cis_imag"), _rope_tables(model.config))) \
        if any(name.startswith("freq_cis") and name not in model.weights for name, _ in layout) else {}
    for name, shape in layout:
        w = np.asarray(model.weights[name] if name in model.weights else tables[name], dtype="<f4")
        if w.shape != shape:
            raise ValueError(f"save: tensor {name} has shape {w.shape}, the config needs {shape}")
        out.append(w)
    return out


def _write(path, chunks):
    """Write through a temporary file, so a failed save leaves any earlier file intact."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def random_model(config, seed=0, scale=None):
    """A random-weight model of ``config`` (for shapes nobody has to download)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in _layout(config):
        if name.startswith("rms"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.startswith("freq"):
            w = np.zeros(shape)
        else:
            fan_in = shape[-1]
            w = rng.standard_normal(shape) * (scale or fan_in ** -0.5)
        weights[name] = w.astype(np.float32)
    if config.shared_classifier:
        weights["wcls"] = weights["token_embedding"]
    return Model(config, weights)
