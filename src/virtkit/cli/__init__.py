"""The command line: thin entry points over the services."""
