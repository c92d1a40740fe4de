"""The torch_npu release the emulated package stands in for."""

__version__ = "2.13.0"
