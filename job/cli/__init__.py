"""The command line: parses arguments and delegates; one module per subcommand."""
