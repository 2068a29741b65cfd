import sys

from softseg.cli import main

sys.exit(main())
