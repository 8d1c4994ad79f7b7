"""`python -m excite.bench`: the benchmark's entry point (the code is in `excite.app.bench`)."""
import sys

from .app.bench import main

if __name__ == "__main__":
    sys.exit(main())
