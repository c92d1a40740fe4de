"""``torchair.configs`` stand-in."""
