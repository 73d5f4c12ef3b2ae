"""The `ordermail` command line: one module per group of subcommands."""
