"""The transformer core's units, each a module with its own interface and test.

The sequencer (sequencer.py) starts them; gateware/accelerator.py instantiates and connects
them; docs/isa.md lists which part of the core is where.
"""
