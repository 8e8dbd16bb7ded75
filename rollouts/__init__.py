"""mlguard rollouts."""
