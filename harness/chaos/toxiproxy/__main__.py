from harness.chaos.toxiproxy.server import main

raise SystemExit(main())
