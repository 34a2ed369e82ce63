"""Install and run the local services without Docker.

    python -m stack fetch | up | down | status [--only kafka,registry,redis,flink] [--json]

Kafka (KRaft, one node), Apicurio Registry (Confluent-compatible API, BACKWARD
compatibility enforced), Redis and a Flink standalone cluster from the PyFlink
wheel, all bound to 127.0.0.1. Versions are pinned in artifacts.toml; settings
come from PARITY_STACK_* variables (see config.py). Layout under the home
folder (.parity): <service>/ generated config and data, logs/ log files,
run/ pid files. Downloads go to the cache folder (.cache).
"""
