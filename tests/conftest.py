import os
import sys

from hypothesis import settings

# Tests import the project's packages from the checkout (also when not pip-installed).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Property-based tests: in CI a fixed number of examples from a fixed seed, so a run is bounded
# and repeatable; LT_FUZZ=long runs many more, from random seeds.
settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("LT_FUZZ", "ci"))
