"""One module per `qssm` subcommand, each with `register(subparsers)`."""
