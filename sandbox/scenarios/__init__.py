"""Scenario files (*.yaml beside this file), drawn from incidents, and their loader (loader.py)."""
