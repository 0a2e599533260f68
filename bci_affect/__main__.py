import sys

from bci_affect.cli import main

sys.exit(main())
