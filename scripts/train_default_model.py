#!/usr/bin/env python3
"""Make the default model, models/tinytales/: a ~300K-parameter llama2.c checkpoint and its tokenizer.

    .venv/bin/pip install -e ".[train]"          # the project venv plus sentencepiece, or any
    .venv/bin/python scripts/train_default_model.py   # python with numpy and sentencepiece

It runs on one core in about 9 minutes (8 of them training, 0.35 s a step) and prints a loss
line every 100 steps. ``--help`` lists the knobs (shape, steps, batch, learning rate, seed,
output folder).

Everything is made here, from nothing but a seed; nothing is downloaded:
1. the corpus: short children's stories from a seeded grammar (``story()``): characters,
   animals, places, objects, feelings and eight little plots with dialogue in quotes;
2. the tokenizer: a 512-piece sentencepiece BPE (llama2.c's train_vocab settings: byte
   fallback, no normalisation, split digits, whitespace-only pieces allowed, unk/bos/eos 0/1/2),
   exported in llama2.c's tokenizer.bin format;
3. the model: llama2.c's architecture (RMSNorm, RoPE, SwiGLU, shared classifier) trained with
   AdamW and a cosine schedule. The forward and backward passes are written out in numpy here
   (float32, one BLAS thread): PyPI's Linux torch wheels are CUDA builds that need gigabytes of
   NVIDIA libraries, and this model is small enough not to need a framework;
4. the export with ``driver.model.save_legacy`` and checks: the project's float reference
   (``driver.reference``) must give the training forward's logits on the saved file, and the
   integer path's teacher-forced agreement (``driver.fidelity.measure``) is printed;
5. three greedy samples from the float reference, prompts encoded and output decoded from
   tokenizer.bin the way llama2.c's run.c does (``Llama2cTokenizer``).

Outputs in ``--out`` (default models/tinytales): model.bin and tokenizer.bin; the figures and
samples for its README.md are printed. The run is deterministic for a given ``--seed`` and
``--steps`` (bit for bit on one machine; another BLAS may round differently); ``--minutes M``
instead picks the number of steps that fits M minutes of training on this machine (printed, so
that ``--steps`` repeats the run exactly). The training corpus itself is not kept: the script
regenerates it.
"""

import argparse
import hashlib
import math
import os
import random
import struct
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# ----------------------------------------------------------------------------------------------
# 1. The corpus: a grammar of little stories
# ----------------------------------------------------------------------------------------------

BOYS = ["Tom", "Ben", "Sam", "Max", "Tim", "Leo", "Jack", "Bob", "Dan", "Joe"]
GIRLS = ["Lily", "Mia", "Anna", "Sue", "Zoe", "Lucy", "Emma", "Amy", "Kate", "Rose"]
ANIMALS = ["dog", "cat", "bird", "bunny", "frog", "duck", "bear", "fox", "mouse", "pig", "owl", "lamb"]
KID_ADJ = ["little", "little", "little", "happy", "kind", "small", "brave", "funny"]
ANIMAL_ADJ = ["little", "little", "little", "big", "small", "fluffy", "brown", "happy", "white", "kind"]
COLORS = ["red", "blue", "green", "yellow", "pink", "big", "shiny", "new"]
TOYS = ["ball", "kite", "hat", "toy car", "doll", "book", "drum", "boat", "teddy bear", "box"]
FOODS = ["cake", "apple", "cookie", "pie", "banana", "sandwich", "carrot", "muffin"]
PLACES = ["park", "garden", "forest", "beach", "farm", "pond", "hill", "field", "river", "zoo"]
AT = {"park": "in the park", "garden": "in the garden", "forest": "in the forest", "beach": "at the beach",
      "farm": "on the farm", "pond": "by the pond", "hill": "on the hill", "field": "in the field",
      "river": "by the river", "zoo": "at the zoo"}
HOMES = ["in a small house", "near the forest", "on a big farm", "in a little town", "by the sea",
         "in a cozy house", "near a pond"]
HIDES = ["under the tree", "behind a big rock", "in the tall grass", "near the pond", "under a bush",
         "behind the house", "in a hole", "under the bed"]
PLAYS = ["played with a ball", "ran in the grass", "played hide and seek", "jumped in the leaves",
         "sang songs", "built a tower of sticks", "played tag", "danced in the sun"]
LIKES = ["play {place}", "run and jump", "sing songs", "look at the sky", "play with {poss} friends",
         "eat {food}s", "draw pictures", "read books", "splash in the water", "climb trees"]
FEARS = ["the dark", "the big tree", "the water", "loud noises", "the big dog next door", "the storm"]
GROWNUPS = [("Mom", "she"), ("Dad", "he"), ("Grandma", "she"), ("Grandpa", "he")]
OUTINGS = {
    "beach": ["They built a big sand castle.", "They looked for shells in the sand.",
              "They splashed in the water."],
    "park": ["They played on the swings.", "They fed the ducks at the pond.", "They flew a kite."],
    "farm": ["They saw a cow and a pig.", "They fed the chickens.", "They picked red apples."],
    "zoo": ["They saw a big lion and a tall giraffe.", "They watched the monkeys jump.",
            "They saw a big elephant."],
    "forest": ["They saw a deer and a rabbit.", "They picked pretty flowers.",
               "They listened to the birds sing."],
}
ENDINGS = ["From that day on, {a} and {b} were best friends.",
           "They played together until the sun went down.",
           "Then they went home, happy and tired.",
           "It was a very good day.",
           "{a} and {b} played together every day after that."]


class Who:
    """A character: name, kind (boy, girl or an animal), pronouns and how to call it."""

    def __init__(self, rnd, avoid=()):
        names = [n for n in BOYS + GIRLS if n not in avoid]
        self.name = rnd.choice(names)
        boy = self.name in BOYS
        self.he, self.his, self.him = ("he", "his", "him") if boy else ("she", "her", "her")
        if rnd.random() < 0.5:
            self.kind, self.adj = ("boy" if boy else "girl"), rnd.choice(KID_ADJ)
            self.animal = False
        else:
            self.kind, self.adj = rnd.choice(ANIMALS), rnd.choice(ANIMAL_ADJ)
            self.animal = True

    @property
    def He(self):
        return self.he.capitalize()

    @property
    def His(self):
        return self.his.capitalize()

    def a(self):
        art = "an" if self.adj[0] in "aeiou" else "a"
        return f"{art} {self.adj} {self.kind}"

    def the(self):
        return f"the little {self.kind}" if self.animal else self.name

    def ref(self, rnd):
        """The name mostly, "the little dog" now and then for an animal."""
        return self.the() if self.animal and rnd.random() < 0.3 else self.name


def cap(s):
    return s[0].upper() + s[1:]


def opening(rnd, h):
    """The first sentence or two: who the story is about."""
    r = rnd.random()
    if r < 0.40:
        return [f"Once upon a time, there was {h.a()} named {h.name}."]
    if r < 0.52:
        return [f"Once upon a time, {rnd.choice(HOMES)}, there lived {h.a()} named {h.name}."]
    if r < 0.62:
        return [f"There was {h.a()} named {h.name}."]
    if r < 0.72:
        return [f"{h.name} was {h.a()} who lived {rnd.choice(HOMES)}."]
    if h.animal and r < 0.90:
        like = rnd.choice(LIKES).format(place=AT[rnd.choice(PLACES)], poss=h.his, food=rnd.choice(FOODS))
        return [f"The little {h.kind} liked to {like}.", f"{h.His} name was {h.name}."]
    return [f"One day, {h.a()} named {h.name} was very happy."]


def trait(rnd, h):
    like = rnd.choice(LIKES).format(place=AT[rnd.choice(PLACES)], poss=h.his, food=rnd.choice(FOODS))
    return rnd.choice([f"{h.He} liked to {like}.", f"{h.He} loved to {like}.",
                       f"Every day, {h.he} liked to {like}."])


def plot_lost(rnd, h):
    f = Who(rnd, avoid=[h.name])
    toy, color, place = rnd.choice(TOYS), rnd.choice(COLORS), rnd.choice(PLACES)
    s = [f"{h.name} had a {color} {toy}.", f"{h.He} loved it very much."]
    s.append(f"One day, {h.ref(rnd)} went to the {place} with {h.his} {toy}.")
    s.append(rnd.choice([f"{h.He} played and played.", f"{h.He} ran and jumped.", ""]))
    s.append(rnd.choice([f"Then {h.he} could not find {h.his} {toy}.", f"But then, the {toy} was gone!"]))
    s.append(rnd.choice([f"{h.name} was very sad.", f"{h.name} began to cry.", f"{h.name} felt sad."]))
    s.append(f"Then {f.a()} named {f.name} came by.")
    s.append(rnd.choice([f'"Why are you sad?" asked {f.name}.', f'"What is wrong?" asked {f.name}.']))
    s.append(f'"I lost my {toy}," said {h.name}.')
    s.append(rnd.choice([f'"Do not worry. I will help you," said {f.name}.', f'"I will help you look," said {f.name}.']))
    s.append(f"They looked {rnd.choice(HIDES)}.")
    s.append(rnd.choice([f"At last, they found the {toy}!", f"There it was! They found the {toy}!"]))
    s.append(f'{h.name} was so happy. "Thank you, {f.name}!" {h.he} said.')
    s.append(rnd.choice(ENDINGS).format(a=h.name, b=f.name))
    return s


def plot_friend(rnd, h):
    f = Who(rnd, avoid=[h.name])
    place = rnd.choice(PLACES)
    s = [rnd.choice([f"{h.name} wanted a friend.", f"{h.name} did not have any friends.",
                     f"{h.name} was lonely and wanted a friend."])]
    s.append(f"One day, {h.he} saw {f.a()} {AT[place]}.")
    s.append(f'"Hello! My name is {h.name}. What is your name?" said {h.ref(rnd)}.')
    s.append(f'"My name is {f.name}," said the {f.kind}.')
    s.append(rnd.choice([f'"Do you want to play with me?" asked {h.name}.', f'"Can we be friends?" asked {h.name}.']))
    s.append(rnd.choice([f'"Yes, I do!" said {f.name}.', f'"Yes!" said {f.name} with a big smile.']))
    s.append(f"They {rnd.choice(PLAYS)} all day.")
    s.append(rnd.choice(ENDINGS).format(a=h.name, b=f.name))
    return s


def plot_share(rnd, h):
    f = Who(rnd, avoid=[h.name])
    food = rnd.choice(FOODS)
    art = "an" if food[0] in "aeiou" else "a"
    s = [rnd.choice([f"{h.name} had a big {food}.", f"Mom gave {h.name} {art} {food}."])]
    s.append(f"{h.He} wanted to eat it all.")
    who = f"{f.name} the {f.kind}" if f.animal else f"{h.his} friend {f.name}"
    s.append(f"Then {h.he} saw {who}. {f.name} looked hungry.")
    s.append(f'"Can I have some?" asked {f.name}.')
    s.append(rnd.choice([f'{h.name} thought for a moment. Then {h.he} said, "Yes, we can share."',
                         f'{h.name} smiled and said, "Yes, let us share."']))
    s.append(f"{h.He} gave half of the {food} to {f.name}.")
    s.append(f"They ate the {food} together. It was very good.")
    s.append(rnd.choice([f"{h.name} learned that sharing makes everyone happy.",
                         f"{h.name} and {f.name} were happy.", rnd.choice(ENDINGS).format(a=h.name, b=f.name)]))
    return s


def plot_fear(rnd, h):
    g, gpron = rnd.choice(GROWNUPS)
    fear = rnd.choice(FEARS)
    s = [f"{h.name} was scared of {fear}."]
    s.append(rnd.choice([f"One night, {h.he} could not sleep.", f"One day, {h.he} began to cry.",
                         f"{h.He} did not want to go outside."]))
    s.append(f"{g} came and sat next to {h.him}.")
    s.append(f'"Do not be scared, {h.name}. I am here," said {g}.')
    s.append(rnd.choice([f"{h.name} took a deep breath.", f"{g} gave {h.him} a big hug."]))
    s.append(f"{h.He} was brave.")
    s.append(rnd.choice([f"Soon {h.he} was not scared anymore.", f"After that, {h.he} was not afraid of {fear}."]))
    s.append(rnd.choice([f"{h.name} felt very proud.", f'"Thank you, {g}," said {h.name}.', ""]))
    return s


def plot_help(rnd, h):
    kind = rnd.choice(["bird", "kitten", "duck", "puppy", "bunny", "frog"])
    trouble, fix = rnd.choice([
        ("was stuck in a tree", "climbed the tree and got it down"),
        ("had a hurt leg", "picked it up and took it home"),
        ("could not find its mom", "helped it look for its mom"),
        ("was stuck in the mud", "pulled it out of the mud"),
        ("was cold and wet", "wrapped it in a warm blanket"),
    ])
    place = rnd.choice(PLACES)
    s = [rnd.choice([f"One day, {h.ref(rnd)} went to the {place}.", f"{h.name} went for a walk {AT[place]}.",
                     f"{h.name} was playing {AT[place]}."])]
    s.append(f"{h.He} saw a little {kind} that {trouble}.")
    s.append(rnd.choice([f'"Help! Help!" said the {kind}.', f"The {kind} was very sad."]))
    s.append(f"{h.name} wanted to help.")
    s.append(f"{h.He} {fix}.")
    s.append(f"Soon the {kind} was safe and happy.")
    s.append(rnd.choice([f'"Thank you!" said the {kind}.', f"The {kind} said, \"Thank you, {h.name}!\""]))
    s.append(rnd.choice([f"{h.name} smiled. {h.He} was happy that {h.he} could help.",
                         f"{h.name} felt warm inside.", "They became good friends."]))
    return s


def plot_outing(rnd, h):
    g, gpron = rnd.choice(GROWNUPS)
    where = rnd.choice(list(OUTINGS))
    s = [rnd.choice(["It was a sunny day.", "The sun was shining.", "It was a warm day."])]
    s.append(f"{h.name} and {g} went to the {where}.")
    s.extend(rnd.sample(OUTINGS[where], 2))
    s.append(rnd.choice([("Then it began to rain.", "They ran home and had warm soup."),
                         (f"Then {h.name} got very tired.", f"{g} carried {h.him} home."),
                         ("Then the sun went down.", "They went home for dinner.")]))
    s = s[:-1] + list(s[-1])
    s.append(rnd.choice(["It was the best day ever.", f'"I love you, {g}," said {h.name}.',
                         f"{h.name} was very happy."]))
    return s


def plot_mess(rnd, h):
    g, gpron = rnd.choice(GROWNUPS)
    what, mess = rnd.choice([("paint a picture", "There was paint on the floor."),
                             ("bake a cake", "There was flour everywhere."),
                             ("build a big tower", "There were toys all over the room."),
                             ("help in the garden", "There was mud on the floor.")])
    s = [f"One day, {h.name} wanted to {what}."]
    s.append(f"{h.He} made a big mess. {mess}")
    s.append(f"{g} was not happy.")
    s.append(f'"I am sorry, {g}," said {h.name}.')
    s.append(rnd.choice([f'"It is okay. Let us clean up together," said {g}.',
                         f"{g} smiled and said, \"We can clean it up.\""]))
    s.append("They cleaned up together.")
    s.append(rnd.choice([f"Then {h.name} and {g} had a big hug.", "Soon the room was clean again.",
                         f"{h.name} was happy again."]))
    return s


def plot_race(rnd, h):
    f = Who(rnd, avoid=[h.name])
    s = [f"{h.name} and {f.name} wanted to have a race."]
    s.append(f'"I am the fastest!" said {f.name}.')
    goal = rnd.choice(["the big tree", "the old fence", "the red house"])
    s.append(f"They ran to {goal}.")
    s.append(f"{f.name} ran fast, but then {f.he} fell down.")
    s.append(f"{h.name} stopped to help {f.him}.")
    s.append(f'"Are you okay?" asked {h.name}.')
    s.append(f'"Yes, thank you," said {f.name}.')
    s.append(f"They walked to {goal} together.")
    s.append(rnd.choice(["It did not matter who won.", "They both laughed.",
                         rnd.choice(ENDINGS).format(a=h.name, b=f.name)]))
    return s


PLOTS = [plot_lost, plot_friend, plot_share, plot_fear, plot_help, plot_outing, plot_mess, plot_race]


def story(rnd):
    h = Who(rnd)
    s = opening(rnd, h)
    if rnd.random() < 0.5 and "liked to" not in s[0]:
        s.append(trait(rnd, h))
    s += rnd.choice(PLOTS)(rnd, h)
    return " ".join(x for x in s if x)


def corpus(n, seed):
    rnd = random.Random(seed)
    return [story(rnd) for _ in range(n)]


# ----------------------------------------------------------------------------------------------
# 2. The tokenizer
# ----------------------------------------------------------------------------------------------

def train_tokenizer(stories, prefix, vocab_size):
    import sentencepiece as spm
    path = prefix + ".txt"
    with open(path, "w", encoding="utf-8") as f:
        for s in stories:
            f.write(s + "\n")
    spm.SentencePieceTrainer.train(
        input=path, model_prefix=prefix, model_type="bpe", vocab_size=vocab_size,
        self_test_sample_size=0, input_format="text", character_coverage=1.0, num_threads=1,
        split_digits=True, allow_whitespace_only_pieces=True, byte_fallback=True,
        unk_surface=r" \342\201\207 ", normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def export_tokenizer(sp, path):
    """llama2.c's tokenizer.bin: int32 max_token_length, then per piece float32 score,
    int32 length and the UTF-8 bytes; '▁' becomes ' ', BOS/EOS become "\\n<s>\\n"/"\\n</s>\\n"."""
    pieces = []
    for i in range(sp.get_piece_size()):
        t = sp.id_to_piece(i)
        if i == sp.bos_id():
            t = "\n<s>\n"
        elif i == sp.eos_id():
            t = "\n</s>\n"
        pieces.append((t.replace("\u2581", " ").encode("utf-8"), sp.get_score(i)))
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(b) for b, _ in pieces)))
        for b, score in pieces:
            f.write(struct.pack("<fi", score, len(b)))
            f.write(b)


class Llama2cTokenizer:
    """tokenizer.bin read back and used as llama2.c's run.c uses it (encode with BOS, dummy
    prefix, byte fallback and merges by score; decode with <0xXX> bytes)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            blob = f.read()
        (self.max_len,), off = struct.unpack_from("<i", blob, 0), 4
        self.pieces, self.scores = [], []
        while off < len(blob):
            score, n = struct.unpack_from("<fi", blob, off)
            self.pieces.append(blob[off + 8:off + 8 + n])
            self.scores.append(score)
            off += 8 + n
        self.index = {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text, bos=True):
        ids = [1] if bos else []
        if text:
            ids.append(self.index[b" "])
        for ch in text:
            b = ch.encode("utf-8")
            if b in self.index:
                ids.append(self.index[b])
            else:
                ids += [x + 3 for x in b]
        while True:
            best, best_i = -1e10, -1
            for i in range(len(ids) - 1):
                j = self.index.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i, best_id = self.scores[j], i, j
            if best_i < 0:
                return ids
            ids[best_i:best_i + 2] = [best_id]

    def decode(self, prev, tok):
        p = self.pieces[tok]
        if prev == 1 and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        return p


# ----------------------------------------------------------------------------------------------
# 3. The model, forward and backward in numpy
# ----------------------------------------------------------------------------------------------

EPS = 1e-5


def init_params(cfg, rng):
    d, h, L, V, kv = cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.vocab_size, cfg.kv_dim
    std, res_std = 0.02, 0.02 / math.sqrt(2 * L)
    n = lambda shape, s: (rng.standard_normal(shape) * s).astype(np.float32)
    return {
        "token_embedding": n((V, d), std),
        "rms_att": np.ones((L, d), np.float32),
        "wq": n((L, d, d), std), "wk": n((L, kv, d), std), "wv": n((L, kv, d), std),
        "wo": n((L, d, d), res_std),
        "rms_ffn": np.ones((L, d), np.float32),
        "w1": n((L, h, d), std), "w2": n((L, d, h), res_std), "w3": n((L, h, d), std),
        "rms_final": np.ones((d,), np.float32),
    }


def rope_tables(cfg, T):
    hs = cfg.head_size
    freq = (1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)).astype(np.float32)
    ang = np.arange(T, dtype=np.float32)[:, None] * freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)   # (T, hs/2)


def rms_fwd(x, g):
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(EPS))
    xn = x * r
    return xn * g, (xn, r, g)


def rms_bwd(dy, cache):
    xn, r, g = cache
    dg = np.sum(dy * xn, axis=tuple(range(dy.ndim - 1)))
    dxn = dy * g
    dx = r * (dxn - xn * np.mean(dxn * xn, axis=-1, keepdims=True))
    return dx, dg


def rope_fwd(x, cos, sin):
    # x: (B, T, H, hs); pairs (even, odd) within each head; cos/sin: (T, hs/2)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_bwd(g, cos, sin):
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    g0, g1 = g[..., 0::2], g[..., 1::2]
    out = np.empty_like(g)
    out[..., 0::2] = g0 * c + g1 * s
    out[..., 1::2] = -g0 * s + g1 * c
    return out


def forward(p, cfg, X, Y=None, rope=None):
    """Logits (B, T, V) and, with targets Y, the mean cross-entropy, the caches for backward."""
    B, T = X.shape
    d, H, KV, hs = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_size
    rep = H // KV
    cos, sin = rope if rope is not None else rope_tables(cfg, T)
    cos, sin = cos[:T], sin[:T]
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    scale = np.float32(1.0 / math.sqrt(hs))
    x = p["token_embedding"][X]                                  # (B, T, d)
    caches = []
    for l in range(cfg.n_layers):
        c = {}
        xb, c["rms1"] = rms_fwd(x, p["rms_att"][l])
        c["xb"] = xb
        q = (xb @ p["wq"][l].T).reshape(B, T, H, hs)
        k = (xb @ p["wk"][l].T).reshape(B, T, KV, hs)
        v = (xb @ p["wv"][l].T).reshape(B, T, KV, hs)
        q, k = rope_fwd(q, cos, sin), rope_fwd(k, cos, sin)
        # Contiguous operands (and transposes made explicit) keep every batched matmul on BLAS.
        qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3))       # (B, H, T, hs)
        kt = np.ascontiguousarray(np.repeat(k.transpose(0, 2, 3, 1), rep, axis=1))   # (B, H, hs, T)
        vt = np.ascontiguousarray(np.repeat(v.transpose(0, 2, 1, 3), rep, axis=1))   # (B, H, T, hs)
        s = (qt @ kt) * scale + mask                             # (B, H, T, T)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        att = s / s.sum(axis=-1, keepdims=True)
        o = (att @ vt).transpose(0, 2, 1, 3).reshape(B, T, d)
        c.update(qt=qt, kt=kt, vt=vt, att=att, o=o)
        x = x + o @ p["wo"][l].T
        xb2, c["rms2"] = rms_fwd(x, p["rms_ffn"][l])
        a = xb2 @ p["w1"][l].T
        b = xb2 @ p["w3"][l].T
        sig = 1.0 / (1.0 + np.exp(-a))
        hid = a * sig * b
        c.update(xb2=xb2, a=a, b=b, sig=sig, hid=hid)
        x = x + hid @ p["w2"][l].T
        caches.append(c)
    xf, cf = rms_fwd(x, p["rms_final"])
    logits = xf @ p["token_embedding"].T                          # (B, T, V)
    if Y is None:
        return logits
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    z = e.sum(axis=-1, keepdims=True)
    logp_y = np.take_along_axis(logits - m, Y[..., None], -1)[..., 0] - np.log(z[..., 0])
    loss = -float(np.mean(logp_y, dtype=np.float64))
    return logits, loss, (X, Y, e / z, xf, cf, caches, cos, sin)


def backward(p, cfg, state):
    X, Y, probs, xf, cf, caches, cos, sin = state
    B, T = X.shape
    d, H, KV, hs = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_size
    rep = H // KV
    scale = np.float32(1.0 / math.sqrt(hs))
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dlogits = probs
    np.put_along_axis(dlogits, Y[..., None], np.take_along_axis(dlogits, Y[..., None], -1) - 1.0, -1)
    dlogits *= np.float32(1.0 / (B * T))
    N = B * T
    g["token_embedding"] += dlogits.reshape(N, -1).T @ xf.reshape(N, d)
    dx, g["rms_final"] = rms_bwd(dlogits @ p["token_embedding"], cf)
    for l in reversed(range(cfg.n_layers)):
        c = caches[l]
        # FFN
        g["w2"][l] = dx.reshape(N, d).T @ c["hid"].reshape(N, -1)
        dhid = dx @ p["w2"][l]
        a, b, sig = c["a"], c["b"], c["sig"]
        da = dhid * b * sig * (1.0 + a * (1.0 - sig))
        db = dhid * a * sig
        xb2 = c["xb2"].reshape(N, d)
        g["w1"][l] = da.reshape(N, -1).T @ xb2
        g["w3"][l] = db.reshape(N, -1).T @ xb2
        dxb2 = da @ p["w1"][l] + db @ p["w3"][l]
        dres, g["rms_ffn"][l] = rms_bwd(dxb2, c["rms2"])
        dx = dx + dres
        # attention
        g["wo"][l] = dx.reshape(N, d).T @ c["o"].reshape(N, d)
        do = (dx @ p["wo"][l]).reshape(B, T, H, hs).transpose(0, 2, 1, 3)   # (B, H, T, hs)
        att = c["att"]
        doT = np.ascontiguousarray(do.transpose(0, 1, 3, 2))                 # (B, H, hs, T)
        datt = do @ np.ascontiguousarray(c["vt"].transpose(0, 1, 3, 2))
        dvT = doT @ att                                                      # (B, H, hs, T)
        ds = att * (datt - np.sum(datt * att, axis=-1, keepdims=True)) * scale
        dqt = ds @ np.ascontiguousarray(c["kt"].transpose(0, 1, 3, 2))
        dkT = np.ascontiguousarray(c["qt"].transpose(0, 1, 3, 2)) @ ds       # (B, H, hs, T)
        dk = dkT.reshape(B, KV, rep, hs, T).sum(axis=2).transpose(0, 3, 1, 2)   # (B, T, KV, hs)
        dv = dvT.reshape(B, KV, rep, hs, T).sum(axis=2).transpose(0, 3, 1, 2)
        dq = rope_bwd(dqt.transpose(0, 2, 1, 3), cos, sin).reshape(N, d)
        dk = rope_bwd(dk, cos, sin).reshape(N, -1)
        dv = dv.reshape(N, -1)
        xb = c["xb"].reshape(N, d)
        g["wq"][l] = dq.T @ xb
        g["wk"][l] = dk.T @ xb
        g["wv"][l] = dv.T @ xb
        dxb = (dq @ p["wq"][l] + dk @ p["wk"][l] + dv @ p["wv"][l]).reshape(B, T, d)
        dres, g["rms_att"][l] = rms_bwd(dxb, c["rms1"])
        dx = dx + dres
    np.add.at(g["token_embedding"], X.reshape(-1), dx.reshape(N, d))
    return g


class AdamW:
    def __init__(self, params, lr, betas=(0.9, 0.95), wd=0.1, eps=1e-8):
        self.lr, (self.b1, self.b2), self.wd, self.eps = lr, betas, wd, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads, lr):
        self.t += 1
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, w in params.items():
            gk = grads[k]
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * gk
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * gk * gk
            if not k.startswith("rms"):          # no decay on norm gains (llama2.c: dim < 2)
                w *= np.float32(1 - lr * self.wd)
            w -= np.float32(lr) * (self.m[k] / bc1) / (np.sqrt(self.v[k] / bc2) + self.eps)


def grad_norm_clip(grads, max_norm):
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    if total > max_norm:
        for g in grads.values():
            g *= np.float32(max_norm / total)
    return total


def to_model(p, cfg):
    from driver.model import Model
    w = dict(p)
    cos, sin = rope_tables(cfg, cfg.seq_len)
    w["freq_cis_real"], w["freq_cis_imag"] = cos, sin
    w["wcls"] = w["token_embedding"]
    return Model(cfg, w)


# ----------------------------------------------------------------------------------------------
# 4./5. Checks and samples
# ----------------------------------------------------------------------------------------------

def greedy(model, tok, prompt, n):
    from driver.reference import FloatTransformer
    t = FloatTransformer(model)
    ids = tok.encode(prompt)
    out = b""
    token = ids[0]
    for pos in range(min(n + len(ids) - 1, model.config.seq_len)):
        logits = t.forward(token, pos)
        nxt = ids[pos + 1] if pos + 1 < len(ids) else int(np.argmax(logits))
        if nxt == 1:                      # BOS delimits stories: run.c stops here
            break
        out += tok.decode(token, nxt)
        token = nxt
    return out.decode("utf-8", errors="replace")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "tinytales"))
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--stories", type=int, default=60000, help="stories generated (the last 2%% are validation)")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--minutes", type=float, default=None,
                    help="instead of --steps: as many steps as fit this many minutes here")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--hidden-dim", type=int, default=192)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--no-fidelity", action="store_true", help="skip the integer-path agreement check")
    args = ap.parse_args(argv)

    from driver.model import Config, load_legacy, save_legacy
    from driver.reference import FloatTransformer

    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    stories = corpus(args.stories, args.seed)
    n_val = max(1, len(stories) // 50)
    train_s, val_s = stories[:-n_val], stories[-n_val:]
    print(f"corpus: {len(stories)} stories ({n_val} for validation), {sum(map(len, stories)) / 1e6:.1f} M chars, "
          f"{len(set(' '.join(stories).split()))} distinct words", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        sp = train_tokenizer(train_s, os.path.join(tmp, "tokenizer"), args.vocab)
    tok_path = os.path.join(args.out, "tokenizer.bin")
    export_tokenizer(sp, tok_path)

    def encode_all(ss):
        ids = []
        for s, e in zip(ss, sp.encode(ss)):
            ids.append(1)
            ids.extend(e)
        return np.array(ids, np.int32)

    train_ids, val_ids = encode_all(train_s), encode_all(val_s)
    print(f"tokenizer: {args.vocab} pieces, {len(train_ids) / 1e6:.2f} M training tokens, "
          f"{sum(map(len, train_s)) / len(train_ids):.2f} chars/token", flush=True)

    cfg = Config(args.dim, args.hidden_dim, args.layers, args.heads, args.kv_heads, args.vocab, args.seq_len, True)
    cfg.validate()
    rng = np.random.default_rng(args.seed)
    p = init_params(cfg, rng)
    n_params = sum(v.size for v in p.values())
    print(f"model: dim {cfg.dim}, hidden {cfg.hidden_dim}, {cfg.n_layers} layers, {cfg.n_heads} heads "
          f"({cfg.n_kv_heads} kv), head size {cfg.head_size}, seq_len {cfg.seq_len}, vocab {cfg.vocab_size}: "
          f"{n_params} parameters", flush=True)

    T, B = cfg.seq_len, args.batch
    rope = rope_tables(cfg, T)

    # Every row starts at a story's BOS, as generation does, and runs on into the next stories.
    starts = {id(a): np.flatnonzero(a[:len(a) - T - 1] == 1) for a in (train_ids, val_ids)}

    def batch(ids, r):
        ix = r.choice(starts[id(ids)], B)
        X = np.stack([ids[i:i + T] for i in ix])
        Y = np.stack([ids[i + 1:i + T + 1] for i in ix])
        return X, Y

    val_rng = np.random.default_rng(args.seed + 1)
    val_batches = [batch(val_ids, val_rng) for _ in range(8)]

    def val_loss():
        return float(np.mean([forward(p, cfg, X, Y, rope)[1] for X, Y in val_batches]))

    steps = args.steps
    opt = AdamW(p, args.lr)
    train_rng = np.random.default_rng(args.seed + 2)
    if args.minutes is not None:
        # Calibrate on a throwaway copy so that the run itself stays a function of (seed, steps).
        q = {k: v.copy() for k, v in p.items()}
        t0 = time.time()
        for _ in range(5):
            X, Y = batch(train_ids, np.random.default_rng(0))
            backward(q, cfg, forward(q, cfg, X, Y, rope)[2])
        per_step = (time.time() - t0) / 5 * 1.03          # + AdamW and bookkeeping
        steps = max(args.warmup + 1, int(args.minutes * 60 / per_step))
        print(f"--minutes {args.minutes}: {per_step:.3f} s/step here, {steps} steps (repeat with --steps {steps})", flush=True)

    t_train = time.time()
    ema = None
    for step in range(1, steps + 1):
        if step <= args.warmup:
            lr = args.lr * step / args.warmup
        else:
            frac = (step - args.warmup) / max(1, steps - args.warmup)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        X, Y = batch(train_ids, train_rng)
        _, loss, state = forward(p, cfg, X, Y, rope)
        grads = backward(p, cfg, state)
        gn = grad_norm_clip(grads, 1.0)
        opt.step(p, grads, lr)
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if step % 100 == 0 or step == 1 or step == steps:
            extra = f", val {val_loss():.4f}" if step % 500 == 0 or step == steps else ""
            print(f"step {step:5d}/{steps}: loss {loss:.4f} (avg {ema:.4f}){extra}, lr {lr:.2e}, "
                  f"grad norm {gn:.2f}, {time.time() - t_train:.0f} s", flush=True)
    train_time = time.time() - t_train
    train_l = float(np.mean([forward(p, cfg, X, Y, rope)[1]
                             for X, Y in [batch(train_ids, np.random.default_rng(args.seed + 3 + i)) for i in range(8)]]))
    vl = val_loss()
    print(f"final: train loss {train_l:.4f}, val loss {vl:.4f} (8 batches of {B}x{T} each); "
          f"training {train_time / 60:.1f} min", flush=True)

    # Export, then the float reference on the saved file must reproduce the training forward.
    model_path = os.path.join(args.out, "model.bin")
    save_legacy(to_model(p, cfg), model_path)
    model = load_legacy(model_path)
    seq = val_ids[:64]
    ours = forward(p, cfg, seq[None, :])[0]
    ref = FloatTransformer(model)
    diff = max(float(np.max(np.abs(ref.forward(int(t), i) - ours[i]))) for i, t in enumerate(seq))
    print(f"reference check: max |logit difference| over {len(seq)} positions = {diff:.2e}", flush=True)
    if diff >= 1e-3:
        raise SystemExit("the exported model does not match the training forward")

    if not args.no_fidelity:
        from driver.fidelity import measure
        m = measure(model, 128)
        print(f"integer path: teacher-forced top-1 agreement with fp32 over 128 positions: "
              f"{100 * m['integer']:.1f} % (llama2.c runq: {100 * m['runq']:.1f} %)", flush=True)

    tok = Llama2cTokenizer(tok_path)
    for prompt in ["", "Once upon a time", "The little dog"]:
        print(f"greedy, 60 tokens, prompt {prompt!r}:\n{greedy(model, tok, prompt, 60)}\n", flush=True)
    print(f"sha256 model.bin {sha256(model_path)}\nsha256 tokenizer.bin {sha256(tok_path)}")
    print(f"total {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
