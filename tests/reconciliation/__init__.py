"""Tests of the reconciliation core; shared builders are in ``builders.py``."""
