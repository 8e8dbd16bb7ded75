"""mlguard webhook."""
