"""datasetd: dataset file downloads (and, later, the daily build job) in one process."""
import sys

from datasetd.server import main

sys.exit(main())
