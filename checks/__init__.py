"""Built-in checks, one module per area, registered through entry points."""
