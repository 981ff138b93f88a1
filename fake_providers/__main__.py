from fake_providers.cli import main

raise SystemExit(main())
