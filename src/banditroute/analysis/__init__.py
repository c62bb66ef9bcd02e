"""Offline analyses of reward tables: what the best policy of a class could achieve with full information."""
