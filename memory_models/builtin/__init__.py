"""Built-in memory technology profiles (TOML files, one per profile)."""
