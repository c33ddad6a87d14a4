from backupmx.cli import main

raise SystemExit(main())
