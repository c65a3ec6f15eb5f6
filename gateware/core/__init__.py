"""The transformer core's units, each a module with its own interface and test.

gateware/accelerator.py instantiates them and holds the sequencer; docs/isa.md lists which part
of the core is where.
"""
