"""Compatibility layers for code written for other libraries (``symgraph.compat.theano``)."""
