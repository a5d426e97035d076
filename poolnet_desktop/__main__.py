from poolnet_desktop.cli import main

raise SystemExit(main())
