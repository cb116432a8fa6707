"""Reverses Stripe Connect transfers when refunds succeed, and reconciles."""
