"""The project's on-disk cache (simulator builds, compiled models) and the source hashing its
keys are made of."""

import os

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
