"""``python -m experiments._child JOB``: one experiment in its own process (see _framework)."""

import sys

from experiments import _framework

if __name__ == "__main__":
    sys.exit(_framework.child_main(sys.argv[1]))
