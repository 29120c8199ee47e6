"""``python -m npvae.bench``: the bench subcommand on its own."""

import sys

from npvae.bench.run import main

sys.exit(main())
