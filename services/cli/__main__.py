from taskstream.cli import main

raise SystemExit(main())
