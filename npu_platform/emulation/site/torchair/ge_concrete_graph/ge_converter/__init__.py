"""``torchair.ge_concrete_graph.ge_converter`` stand-in."""
