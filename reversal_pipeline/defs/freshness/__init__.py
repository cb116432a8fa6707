"""Freshness: is the work being done on time? Checks that fail (ERROR) when it is not."""
