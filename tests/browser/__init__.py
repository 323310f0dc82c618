"""Helpers for the dashboard's tests: a ledger filled by the demo, the dashboard served on loopback."""
