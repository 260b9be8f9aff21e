from booking_rpc.cli import main

raise SystemExit(main())
