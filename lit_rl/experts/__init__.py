"""Scripted experts that play the benchmark games and make demonstrations and FAR start states."""
