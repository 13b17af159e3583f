"""Agents that play the rlmba environments: SB3 training scripts and their shared pieces."""
