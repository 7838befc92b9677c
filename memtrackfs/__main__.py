import sys

from memtrackfs.cli import main

sys.exit(main())
