"""Sleep/wake memory manager: a hardware-agnostic core over small device drivers."""
