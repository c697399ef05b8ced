"""Registry steps: load_champion (what an update starts from), register and register_update (promotion)."""
