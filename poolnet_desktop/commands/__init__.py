"""The ``poolnet`` subcommands, one module each; ``poolnet_desktop.cli`` wires them to argparse."""
