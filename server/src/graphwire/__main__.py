from graphwire.cli import main

raise SystemExit(main())
