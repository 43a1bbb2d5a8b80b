"""What both doors (the command line and the web interface) do with cases, once."""
