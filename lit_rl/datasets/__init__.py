"""Readers of recorded pre-training data, below the scenarios that serve them to retention methods.

The recorders that play policies to write such data live in ``lit_rl.recording`` (above scenarios).
"""
