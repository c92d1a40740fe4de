"""``torchair.ge_concrete_graph`` stand-in (no graph engine on the emulated NPU)."""
