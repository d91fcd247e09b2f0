"""Routing: which studies go to which models, and where the results go."""
