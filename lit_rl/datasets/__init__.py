"""Readers of recorded pre-training data, below the scenarios that serve them to retention methods.

The builders that play policies to record such data live in ``lit_rl.data`` (above scenarios).
"""
