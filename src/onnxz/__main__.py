"""``python -m onnxz`` runs the CLI."""

from onnxz.console import main

main()
