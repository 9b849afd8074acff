"""Crash tests: real processes killed and restarted."""
