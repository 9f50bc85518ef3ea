import sys

from recsys.batch.cli import main

sys.exit(main())
