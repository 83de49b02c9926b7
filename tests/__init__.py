"""The test suites, laid out like the code they test (see ``support`` for shared helpers)."""
