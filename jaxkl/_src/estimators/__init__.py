"""Private implementation modules (see jaxkl._src)."""
