"""Helpers every kind of test shares: loopback ports, child processes that die with the
test, and polling with a deadline instead of sleeping."""
