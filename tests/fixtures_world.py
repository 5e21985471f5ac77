"""Session fixtures for the world stage (see conftest.py)."""
