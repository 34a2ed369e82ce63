"""Feature definitions: the API (definition.py) and one module per feature view."""
