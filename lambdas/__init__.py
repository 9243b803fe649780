"""Bedrock action-group Lambdas (deployed as plain modules; a package only for tests)."""
