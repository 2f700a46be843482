"""Dramatiq's result and rate-limiter backend interfaces, on Interlock's database."""
