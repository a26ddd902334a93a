"""Pure parsers of the binary and text formats kabigate reads. They never print or exit."""
