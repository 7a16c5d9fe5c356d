"""Tests of the command-line layer: option parsing, exit codes, progress bars."""
