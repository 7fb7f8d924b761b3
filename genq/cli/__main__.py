import sys

from genq.cli.main import main

sys.exit(main())
