"""Session fixtures for the model stage (see conftest.py)."""
