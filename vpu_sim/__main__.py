import sys

from vpu_sim.cli import main

sys.exit(main())
