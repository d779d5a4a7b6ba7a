"""Solvers: each prepares its kernel's inputs once and then runs one epoch per ``epoch()``."""
