from varkit.cli import main

raise SystemExit(main())
