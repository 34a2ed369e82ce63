"""Shared by every test directory."""

import contextlib
import warnings

# authlib, when first imported, puts an "always" filter for its own deprecation warnings in
# front of every other, and confluent-kafka's registry client makes it warn that its httpx
# module is deprecated (pyproject.toml ignores that one). Import it first and put the ignore
# back in front, for the conftests pytest loads next; later, pytest's own filters apply.
with contextlib.suppress(ImportError):
    import authlib.deprecate  # noqa: F401
warnings.filterwarnings("ignore", message="The httpx module is deprecated")
