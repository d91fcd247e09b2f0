"""HTTP API: health, studies (and later routing, feedback, observatory)."""
