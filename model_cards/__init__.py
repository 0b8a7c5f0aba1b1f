"""Model card templates (installed as package data so that `ctinit-hub export` works from a wheel too)."""
