"""The project's on-disk cache (simulator builds, compiled models) and the source hashing its
keys are made of."""

import hashlib
import os
import pickle

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HASHED_SUFFIXES = (".py", ".c", ".cpp", ".h", "Makefile")


def cache_root():
    return os.environ.get("LITETRANSFORMER_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "litetransformer"))


def hash_files(h, sources):
    """Feed ``h`` the path and contents of every source file in ``sources`` (files or folders
    relative to the project), in a fixed order."""
    for sub in sources:
        root = os.path.join(PROJECT_DIR, sub)
        paths = [root] if os.path.isfile(root) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(root) if "__pycache__" not in d for f in fs)
        for path in paths:
            if path.endswith(_HASHED_SUFFIXES):
                h.update(os.path.relpath(path, PROJECT_DIR).encode())
                with open(path, "rb") as f:
                    h.update(f.read())


# Integrity ---------------------------------------------------------------------------------------
# A cache entry carries the SHA-256 of its contents, checked each time it is used: an entry that
# a crash, a full disk or a stray edit damaged is discarded and rebuilt with a one-line notice,
# never used (the upload's CRC cannot catch it: the host computes it from the same bytes).
MANIFEST = "manifest.sha256"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory, files):
    """Record the SHA-256 of ``files`` (paths relative to ``directory``) in its manifest."""
    lines = [f"{_sha256(os.path.join(directory, name))}  {name}\n" for name in files]
    with open(os.path.join(directory, MANIFEST), "w") as f:
        f.writelines(lines)


def manifest_problem(directory):
    """Why the entry in ``directory`` cannot be trusted, or None when every file it lists is as
    recorded."""
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            entries = [line.rstrip("\n").split("  ", 1) for line in f if line.strip()]
    except OSError:
        return "it has no manifest"
    if not entries or any(len(e) != 2 for e in entries):
        return "its manifest is unreadable"
    for digest, name in entries:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} differs from the SHA-256 recorded when it was built"
    return None


def store_pickle(path, obj):
    """Pickle ``obj`` to ``path`` behind the SHA-256 of the pickle, through a temporary file."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(hashlib.sha256(payload).digest() + payload)
    os.replace(tmp, path)


def load_pickle(path, notice=None):
    """The object ``store_pickle`` wrote to ``path``; None when there is none, or when the file is
    damaged (then it is deleted and ``notice`` gets one line saying so)."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    digest, payload = blob[:32], blob[32:]
    problem = None
    if hashlib.sha256(payload).digest() != digest:
        problem = "its contents differ from their recorded SHA-256"
    else:
        try:
            return pickle.loads(payload)
        except Exception as e:          # a pickle of classes this version no longer has
            problem = f"it does not unpickle ({type(e).__name__})"
    if notice:
        notice(f"[cache] {path}: {problem}; discarded, rebuilding")
    try:
        os.remove(path)
    except OSError:
        pass
    return None
