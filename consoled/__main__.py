import sys

from consoled.app import main

sys.exit(main())
