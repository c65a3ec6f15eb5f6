import os
import sys

# Tests import the project's packages from the checkout (also when not pip-installed).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
