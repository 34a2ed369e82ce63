"""``python -m producer`` runs ``parity produce``."""

from producer.cli import main

raise SystemExit(main())
