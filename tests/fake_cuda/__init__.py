"""A fake ``libcuda.so.1`` built from C against the real ``cuda.h``, for driver tests."""
