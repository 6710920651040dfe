"""The routes, one module per area; each is a thin shell over a service."""
