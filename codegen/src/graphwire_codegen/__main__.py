from graphwire_codegen.cli import main

raise SystemExit(main())
