"""The command line, one module per command group; ``python -m dmac_core`` dispatches."""
