"""parity: one feature definition, one compiled pipeline, online and offline reads that agree."""
