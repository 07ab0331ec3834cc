"""Pure renderers and parsers: values in, text out (or text in, values out). No I/O."""
