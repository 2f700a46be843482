"""Dramatiq actors, their middleware and the broker that carries their messages."""
