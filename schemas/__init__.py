"""Avro schemas, one .avsc file per subject and version, and the tooling around them."""
