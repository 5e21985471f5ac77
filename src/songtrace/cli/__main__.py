"""`python -m songtrace.cli`: the same as the `songtrace` command."""

from songtrace.cli import main

main()
