"""Reading features: the assembly function, online (Redis) and point-in-time (Iceberg) reads.

Nothing here imports PyFlink: a model server installs only the light client
packages (see the ``serve`` extra).
"""
