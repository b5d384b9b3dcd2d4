"""The `kubetune` command line."""
