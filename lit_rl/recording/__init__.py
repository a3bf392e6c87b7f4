"""Recorders: play π* or an expert and write what they did (games, trajectories, start states).

What they write is read back by ``lit_rl.datasets`` (below the scenarios); recorders sit above the
scenarios because they play through them.
"""
