"""A fake ``libascendcl.so`` built from C against the real ACL headers, for contract tests."""
