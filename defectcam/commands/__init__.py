"""Subcommands of the `defectcam` console script, one module each."""
