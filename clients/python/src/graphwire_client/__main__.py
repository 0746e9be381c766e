"""``python -m graphwire_client``: the ``graphwire-client`` CLI."""

from graphwire_client.cli import main

raise SystemExit(main())
