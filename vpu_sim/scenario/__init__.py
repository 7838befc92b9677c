"""Scenarios: TOML timelines of applications and faults, their runner and live view."""
