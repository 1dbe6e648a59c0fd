"""`python -m api.cli`: the same commands as the `phi-ledger` script."""

from api.cli import main

main()
