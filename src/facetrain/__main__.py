from facetrain.cli import main

raise SystemExit(main())
