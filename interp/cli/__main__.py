"""`python -m interp.cli`: the command line."""

from . import main

main()
