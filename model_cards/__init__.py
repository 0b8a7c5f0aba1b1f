"""Model card templates (installed as package data so that `python -m hub export` works from a wheel too)."""
