"""Contract tests: fuzz a live ``graphwire serve`` against ``spec/asyncapi.yaml`` (issue 5)."""
