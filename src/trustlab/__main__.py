"""``python -m trustlab`` runs the command line."""

from trustlab.cli import main

main()
