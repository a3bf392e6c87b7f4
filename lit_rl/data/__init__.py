"""Datasets: NetHack Learning Dataset ingestion and the expert-demonstration recorder."""
