"""Analyses of trained networks (one module each; import the module you need)."""
