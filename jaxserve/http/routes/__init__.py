"""Route handlers, one module per endpoint family."""
