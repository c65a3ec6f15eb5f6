"""../shared/models: real checkpoints that CI has and a fresh clone does not. Tests that need
one ask for it here and are skipped, with the reason, when the folder is absent; under CI
(``CI=true``, which .ci/run sets) its absence is a failure, so that a CI run cannot pass by
skipping them."""

import os

import pytest

SHARED_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "models")


def shared_path(*parts):
    """The path of ``parts`` under ../shared/models; skips the calling test when it is absent
    (fails it under CI)."""
    path = os.path.join(SHARED_MODELS, *parts)
    if not os.path.exists(path):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{os.path.normpath(path)} is missing, and CI must have ../shared/models")
        pytest.skip("../shared/models not present")
    return path
