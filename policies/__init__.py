"""mlguard policies."""
