"""Session fixtures for the codec stage (see conftest.py)."""
