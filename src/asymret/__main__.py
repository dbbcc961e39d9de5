from asymret.cli import main

raise SystemExit(main())
