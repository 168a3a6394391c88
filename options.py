"""The original's `options.py`, kept at the top level for its users: the options live in
`lib/options/`, which the scripts and the library import."""
from lib.options import *  # noqa: F401,F403
