"""The `cips` commands, one module per command or group (installed as cips_edge.commands); cli.py puts
them together. Each command parses its options (options.py: one definition per option) and calls one
library function; torch and the heavier runtime parts are imported inside the commands that need them,
so `cips render` never imports torch."""
