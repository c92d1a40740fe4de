"""``torchair.ge_concrete_graph.ge_converter.experimental`` stand-in."""
