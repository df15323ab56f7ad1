"""``python -m onnxz`` runs the CLI."""

from onnxz.cli import main

main()
