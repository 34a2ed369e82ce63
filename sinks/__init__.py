"""The online (Redis) and offline (Iceberg) tile stores."""
